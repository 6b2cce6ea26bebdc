"""`orchestra sweep ... -m` on the local launcher: one job directory per member, a manifest, and a comparison table."""

from __future__ import annotations

import re
from pathlib import Path

from orchestra_testkit import TINY, read_json, run_cli

# Both members must accept every override: proj_dim exists in both methods, `++` adds the SimCLR-only hidden width
# to VICReg's hparams (where nothing reads it).
SWEEP = ["method=simclr,vicreg", *TINY, "module.hparams.proj_dim=32", "++module.hparams.proj_hidden_dim=64"]


def test_local_sweep_runs_every_member_and_prints_the_comparison(tmp_path):
    output_root = tmp_path / "out"
    # Rendered at rich's default 80 columns for a pipe, as a user redirecting to a file would see it.
    result = run_cli(["sweep", *SWEEP, f"output_root={output_root}", "-m"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sweep_dirs = list((output_root / "sweeps").iterdir())
    assert len(sweep_dirs) == 1
    sweep = read_json(sweep_dirs[0] / "sweep.json")
    assert sweep["swept_keys"] == ["method"]
    members = sweep["members"]
    assert [m["state"] for m in members] == ["COMPLETED", "COMPLETED"]
    assert [m["attempts"] for m in members] == [1, 1]
    assert ["method=simclr" in m["overrides"] for m in members] == [True, False]
    assert ["method=vicreg" in m["overrides"] for m in members] == [False, True]

    knn = {}
    for member, method in zip(members, ("simclr", "vicreg"), strict=True):
        job_dir = Path(member["job_dir"])
        assert job_dir.parent == sweep_dirs[0].resolve()  # members live inside their sweep directory
        results = read_json(job_dir / "results.json")
        assert results["state"] == "COMPLETED"
        assert results["method"] == method
        assert len(results["history"]) == 1
        knn[method] = results["metrics"]["knn/top1"]
        log = (job_dir / "log.txt").read_text()
        assert f"[{method}_forward] epoch 1/1" in log  # the member's own output went to its log
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()

    # The table names both members with the kNN value from their results files, and the random-init floor row.
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3}
    for method in ("simclr", "vicreg"):
        assert method in rows, result.stdout
        assert "COMPLETED" in rows[method]
        assert f"{knn[method]:.4f}" in rows[method]
    floor_rows = [line for line in result.stdout.splitlines() if "random-init" in line]
    assert len(floor_rows) == 1, result.stdout
    assert re.search(r"0\.\d{4}", floor_rows[0])


def test_dry_run_prints_both_job_dirs_and_creates_nothing(tmp_path):
    output_root = tmp_path / "out"
    result = run_cli(["sweep", *SWEEP, f"output_root={output_root}", "-m", "--dry-run"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    targets = re.findall(r"->\s+(\S+)", result.stdout)
    assert len(targets) == 2, result.stdout
    assert "method=simclr" in targets[0] and "method=vicreg" in targets[1]
    for target in targets:
        assert Path(target).parent.parent == (output_root / "sweeps").resolve()
    # Nothing was created: not the job directories, not the sweep directory, not even output_root.
    assert not output_root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
