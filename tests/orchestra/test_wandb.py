"""wandb with real offline run files: what a member's run records, that a requeued member stays one run, that no
secret reaches the sweep directory, that a failing wandb costs only the logging, and `orchestra sync` / the wandb
report without a login.

Run files are read back with wandb's own reader (`wandb leet inspect --json`, one JSON record per line), since
offline runs write no summary file and wandb's API needs a server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import wandb
from omegaconf import OmegaConf
from orchestra_testkit import REPO, read_json, run_cli_concurrently, subprocess_env, tiny_overrides
from rich.console import Console

from launch import manifest
from orchestra.config.compose import compose
from orchestra.errors import UserError
from orchestra.job.body import run_job
from orchestra.jobstate.job_dir import prepare_job_dir
from orchestra.tracking.loggers import resolve_mode, run_id, run_identity, tags_for
from orchestra.tracking.wandb_report import publish_report

FAKE_KEY = "FAKEWANDBSECRET" + "0123456789abcdefghijklmnopqrstuvwxy"  # 40+ characters, shaped like a real key
WANDB = REPO / ".venv" / "bin" / "wandb"
CURVES = ("knn/top1", "probe/top1")


def _wandb_overrides(output_root: Path, *extra: str) -> list[str]:
    return [o for o in tiny_overrides(output_root, "simclr", *extra) if o != "logger=none"] + ["logger=wandb"]


def _make_sweep(sweep_dir: Path, overrides: list[str]) -> Path:
    """A one-member sweep written the way `orchestra sweep` writes one: job dir with config.yaml, sweep.json."""
    job_dir = sweep_dir / "000-seed=1"
    prepare_job_dir(job_dir, compose(overrides))
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=["orchestra", "sweep", *overrides, "-m"],
                                   launcher="local", created_at=manifest.now(), swept_keys=["seed"],
                                   members=[manifest.Member(index=0, overrides=overrides, job_dir=str(job_dir))]))
    return job_dir


def _records(run_folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run([str(WANDB), "leet", "inspect", "--json", str(run_folder)], capture_output=True, text=True,
                         check=True, timeout=60)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _wandb_home(root: Path) -> dict[str, str]:
    home = root / "wandb_home"
    return {"WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts")}


@pytest.fixture(scope="module")
def requeued_member(tmp_path_factory):
    """One sweep member trained with logger=wandb, preempted by SIGUSR2 in the middle of epoch 2 and run again in
    the same job directory (as a requeue does), with an API key in the environment throughout.
    """
    root = tmp_path_factory.mktemp("wandb_sweep")
    sweep_dir = root / "out" / "sweeps" / "20260101-000000"
    kill = ["+callbacks.kill._target_=orchestra_testkit.SignalAtBatch", "+callbacks.kill.epoch=1",
            "+callbacks.kill.batch=1", "+callbacks.kill.signum=12"]
    overrides = _wandb_overrides(root / "out", "seed=1", "trainer.max_epochs=2", *kill)
    with pytest.MonkeyPatch.context() as env:
        for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL"):
            env.delenv(key, raising=False)
        env.setenv("WANDB_API_KEY", FAKE_KEY)
        for key, value in _wandb_home(root).items():
            env.setenv(key, value)
        job_dir = _make_sweep(sweep_dir, overrides)
        with pytest.raises(SystemExit):
            run_job(job_dir)
        first_attempt = read_json(job_dir / "results.json")
        config = OmegaConf.load(job_dir / "config.yaml")
        del config.callbacks["kill"]
        (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
        results = run_job(job_dir)
        wandb.teardown()  # its service process and settings end with this sweep, not with the test session
    folders = sorted((job_dir / "wandb").glob("offline-run-*"))
    return {"root": root, "sweep_dir": sweep_dir, "job_dir": job_dir, "results": results, "first": first_attempt,
            "folders": folders, "records": [_records(f) for f in folders]}


def _run_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r["run"] for r in records if r["type"] == "run")


def test_requeued_member_is_one_run_with_its_identity(requeued_member):
    job_dir, sweep_dir = requeued_member["job_dir"], requeued_member["sweep_dir"]
    assert requeued_member["first"]["state"] == "PREEMPTED"
    assert requeued_member["results"]["state"] == "COMPLETED" and requeued_member["results"]["attempts"] == 2

    # One folder per attempt, both for the same run id (derived from the job dir), so a sync makes them one run.
    assert len(requeued_member["folders"]) == 2
    expected_id = run_id(job_dir)
    for folder, records in zip(requeued_member["folders"], requeued_member["records"], strict=True):
        run = _run_record(records)
        assert folder.name.endswith(f"-{expected_id}") and run["run_id"] == expected_id
        assert run["run_group"] == sweep_dir.name and run["job_type"] == "simclr"
        assert {"method=simclr", "seed=1", "trainer.max_epochs=2", "logger=wandb"} <= set(run["tags"])
        assert all(len(tag) <= 64 for tag in run["tags"]) and not any("output_root" in t for t in run["tags"])
        config = run["config"]["update"]
        assert config["logger"]["mode"] == "offline" and config["seed"] == 1
        assert config["trainer"]["max_epochs"] == 2 and config["job_dir"] == str(job_dir)
        assert run["project"] == "orchestra" and run["resume"] is True
    # The preempted attempt closed its run as not successful; the resumed one as finished.
    exits = [next(r["exit"] for r in records if r["type"] == "exit") for records in requeued_member["records"]]
    assert exits[0].get("exit_code", 0) != 0 and exits[1].get("exit_code", 0) == 0


def test_logged_curves_equal_the_results_history(requeued_member):
    history = requeued_member["results"]["history"]
    assert len(history) == 2  # epoch 1 logged by the first attempt, epoch 2 by the resumed one
    logged: dict[str, dict[int, float]] = {name: {} for name in CURVES}
    rows_per_attempt = []
    for records in requeued_member["records"]:
        rows = [r["history"]["item"] for r in records if r["type"] == "history"]
        rows_per_attempt.append(len([row for row in rows if "knn/top1" in row]))
        for row in rows:
            for name in CURVES:
                if name in row:
                    assert int(row["trainer/global_step"]) not in logged[name], "a step logged twice"
                    logged[name][int(row["trainer/global_step"])] = row[name]
    assert rows_per_attempt == [1, 1]
    for name in CURVES:
        # x-axis = trainer.global_step, the step results.json records (Lightning's own step drifts on resume)
        expected = {record["step"]: record["metrics"][name] for record in history}
        assert logged[name].keys() == expected.keys(), name
        for step, value in expected.items():
            assert logged[name][step] == pytest.approx(value, abs=1e-6), (name, step)
    # Summaries: the last and the best value of each curve, defined for the whole run.
    for records in requeued_member["records"]:
        defined = {r["metric"].get("name"): r["metric"] for r in records if r["type"] == "metric"}
        for name in CURVES:
            assert defined[name]["summary"] == {"last": True, "max": True}
            assert defined[name]["step_metric"] == "trainer/global_step"
    last_summary = [r["summary"]["update"] for r in requeued_member["records"][1] if r["type"] == "summary"
                    and "knn/top1" in r["summary"]["update"]][-1]
    assert last_summary["knn/top1"]["last"] == pytest.approx(history[-1]["metrics"]["knn/top1"], abs=1e-6)


def test_no_file_of_the_sweep_holds_the_api_key(requeued_member):
    sweep_dir = requeued_member["sweep_dir"]
    files = [p for p in sweep_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and len(files) > 10  # wandb really wrote its files here
    leaks = [str(p) for p in files if FAKE_KEY.encode() in p.read_bytes() or FAKE_KEY in str(p)]
    assert leaks == []


def test_sync_without_login_names_the_fix_and_lists_waiting_runs(requeued_member, tmp_path):
    sweep_dir = requeued_member["sweep_dir"]
    no_login = subprocess_env(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), **_wandb_home(tmp_path))
    with_key = subprocess_env(HOME=str(tmp_path), WANDB_API_KEY=FAKE_KEY, **_wandb_home(tmp_path))
    results = run_cli_concurrently({
        "sync": (["sync", str(sweep_dir)], tmp_path, no_login),
        "dry": (["sync", str(sweep_dir), "--dry-run"], tmp_path, with_key),
        "bad": (["sync", str(tmp_path / "missing")], tmp_path, no_login),
    }, timeout=120)

    sync = results["sync"]
    assert sync.returncode == 2, sync.stderr
    (line,) = sync.stderr.strip().splitlines()
    assert line.startswith("error: 2 offline run(s) of 1 member(s)")
    assert "wandb login" in line and "WANDB_API_KEY" in line and f"orchestra sync {sweep_dir}" in line
    for folder in requeued_member["folders"]:
        assert str(folder) in sync.stdout
    assert not list(sweep_dir.rglob("*.synced"))  # nothing was uploaded or marked

    dry = results["dry"]
    assert dry.returncode == 0, dry.stderr
    assert "2 offline run(s) of 1 member(s) would be uploaded" in dry.stdout
    assert all(str(folder) in dry.stdout for folder in requeued_member["folders"])
    assert FAKE_KEY not in dry.stdout + dry.stderr

    bad = results["bad"]
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not a directory" in bad.stderr


def test_wandb_report_without_login_says_so_in_one_line(requeued_member, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    console = Console(record=True, width=80)
    publish_report(requeued_member["sweep_dir"], console)
    (line,) = console.export_text().strip().splitlines()  # one line even on a narrow terminal
    assert "wandb login" in line and "WANDB_API_KEY" in line and "local report" in line


def test_wandb_report_holds_the_table_and_curves_of_the_sweep_group(requeued_member):
    pytest.importorskip("wandb_workspaces", reason="optional extra: pip install 'orchestra[wandb]'")
    import wandb_workspaces.reports.v2 as wr

    from orchestra.tracking.wandb_report import build_report

    sweep_dir = requeued_member["sweep_dir"]
    report = build_report(sweep_dir, project="orchestra", entity="someone")  # built, not saved: no server here
    (table,) = [b for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    knn = requeued_member["results"]["metrics"]["knn/top1"]
    assert f"{knn:.4f}" in table.text and "COMPLETED" in table.text
    (grid,) = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert grid.runsets[0].filters == f"Metric('Group') == '{sweep_dir.name}'"
    assert grid.runsets[0].project == "orchestra" and grid.runsets[0].entity == "someone"
    assert sorted(y for panel in grid.panels for y in panel.y) == sorted(CURVES)
    assert {panel.x for panel in grid.panels} == {"trainer/global_step"}


@pytest.mark.parametrize("failure", ["WANDB_MODE=invalid", "wandb folder is a file"])
def test_failing_wandb_warns_once_and_the_run_completes(tmp_path, monkeypatch, failure):
    for key, value in _wandb_home(tmp_path).items():
        monkeypatch.setenv(key, value)
    job_dir = tmp_path / "job"
    prepare_job_dir(job_dir, compose(_wandb_overrides(tmp_path, "trainer.limit_train_batches=1")))
    if failure == "WANDB_MODE=invalid":
        monkeypatch.setenv("WANDB_MODE", "invalid")  # wandb's settings validation rejects it at wandb.init
        wandb.teardown()  # wandb reads WANDB_* once per process; a job process starts fresh, so must this one
    else:
        (job_dir / "wandb").write_text("not a folder")  # wandb cannot create its run folder under it

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_job(job_dir)
    wandb.teardown()
    stopped = [w for w in caught if "wandb logging stopped" in str(w.message)]
    assert len(stopped) == 1, [str(w.message) for w in caught]
    assert "training continues" in str(stopped[0].message)
    on_disk = read_json(job_dir / "results.json")
    assert results["state"] == on_disk["state"] == "COMPLETED"
    assert set(CURVES) <= set(on_disk["metrics"]) and len(on_disk["history"]) == 1


def test_train_run_outside_a_sweep_is_grouped_as_train(tmp_path):
    job_dir = tmp_path / "train" / "20260101-000000-byol"
    cfg = compose(["method=byol", "logger=wandb", "seed=3", "+logger.api_key=hidden"])
    prepare_job_dir(job_dir, cfg)
    identity = run_identity(OmegaConf.load(job_dir / "config.yaml"), job_dir)
    assert identity["group"] == "train" and identity["job_type"] == "byol" and identity["name"] == job_dir.name
    assert identity["tags"] == ["method=byol", "seed=3"]
    assert identity["config"]["logger"]["api_key"] == "<redacted>"


def test_tags_are_sanitised_and_short():
    tags = tags_for("simclr", 0, ["+data.root=/some dir/with spaces, commas", "optim.lr=0.001",
                                  "output_root=/tmp/x", "+logger.api_key=<redacted>", "x=" + "y" * 100])
    assert tags[:3] == ["method=simclr", "seed=0", "data.root=/some-dir/with-spaces-commas"]
    assert "optim.lr=0.001" in tags and len(tags) == 5 and all(len(t) <= 64 for t in tags)


def test_mode_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_mode("offline") == resolve_mode("auto") == "offline"
    with pytest.warns(RuntimeWarning, match="no wandb login was found"):
        assert resolve_mode("online") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")  # `wandb login`
    assert resolve_mode("auto") == resolve_mode("online") == "online" and resolve_mode("offline") == "offline"
    monkeypatch.setenv("NETRC", str(tmp_path / "other"))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto") == "online"
    with pytest.raises(UserError, match="logger.mode 'cloud' is not one of offline, online, auto"):
        resolve_mode("cloud")


def test_sync_skips_runs_wandb_already_uploaded(requeued_member, tmp_path, capsys):
    from orchestra.tracking.wandb_sync import sync

    sweep_copy = tmp_path / requeued_member["sweep_dir"].name
    shutil.copytree(requeued_member["sweep_dir"], sweep_copy, symlinks=True)
    sweep = manifest.load(sweep_copy)  # the copy's manifest still names the original dirs; point it at the copy
    sweep.sweep_dir = str(sweep_copy)
    for member in sweep.members:
        member.job_dir = str(sweep_copy / Path(member.job_dir).name)
    manifest.create(sweep)
    first = sorted((sweep_copy / "000-seed=1" / "wandb").glob("offline-run-*"))[0]
    (first / f"run-{first.name.rsplit('-', 1)[-1]}.wandb.synced").write_text("")  # the marker `wandb sync` leaves

    assert sync(sweep_copy, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "1 offline run(s) of 1 member(s) would be uploaded" in out and first.name not in out
    for folder in sorted(first.parent.glob("offline-run-*"))[1:]:
        (folder / f"run-{folder.name.rsplit('-', 1)[-1]}.wandb.synced").write_text("")
    assert sync(sweep_copy) == 0  # nothing left: no login needed, nothing run
    assert "nothing to upload" in capsys.readouterr().out


def test_online_without_a_reachable_server_logs_offline_instead(tmp_path, monkeypatch):
    # A cluster node with a login but no internet: a closed local port stands in for the unreachable server.
    for key, value in _wandb_home(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    # wandb's defaults (90 s, retried requests) only make it slower to give up: ~100 s instead of ~8 s
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setenv("WANDB_X_GRAPHQL_RETRY_MAX", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wandb.teardown()  # wandb reads WANDB_* once per process; a job process starts fresh, so must this one
    job_dir = tmp_path / "job"
    prepare_job_dir(job_dir, compose(_wandb_overrides(tmp_path, "trainer.limit_train_batches=1", "logger.mode=auto")))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_job(job_dir)
    wandb.teardown()
    about_wandb = [str(w.message) for w in caught if str(w.message).startswith("wandb ")]
    assert len(about_wandb) == 1 and "could not start online" in about_wandb[0], about_wandb
    assert "logging offline instead" in about_wandb[0]
    assert results["state"] == "COMPLETED"
    (folder,) = (job_dir / "wandb").glob("offline-run-*")
    rows = [r["history"]["item"] for r in _records(folder) if r["type"] == "history"]
    assert [row["knn/top1"] for row in rows if "knn/top1" in row] == pytest.approx(
        [h["metrics"]["knn/top1"] for h in results["history"]], abs=1e-6)
    assert not [p for p in job_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert all(FAKE_KEY not in message for message in about_wandb)


def test_diverged_run_reads_diverged_in_wandb(tmp_path, monkeypatch):
    for key, value in _wandb_home(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    job_dir = _make_sweep(tmp_path / "sweep", _wandb_overrides(tmp_path, "optim.lr=1e6"))

    results = run_job(job_dir)

    assert results["state"] == "DIVERGED"
    (run_folder,) = (job_dir / "wandb").glob("offline-run-*")
    records = _records(run_folder)
    summary = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"]["update"])
    assert summary["state"] == "DIVERGED"
    assert summary["divergence/step"] == results["divergence"]["step"]
    assert summary["divergence/lr"] == pytest.approx(1e6)
    assert "diverged" in [r["run"] for r in records if r["type"] == "run"][-1]["tags"]
