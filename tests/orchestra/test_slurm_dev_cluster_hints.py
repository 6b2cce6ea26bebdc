"""launcher=slurm next to a development cluster: the missing `export SLURM_CONF=...` named in the one error line, and
members sized from this machine's CPUs (cpus_per_task: auto).

The cluster here is a state directory made the way `orchestra cluster up` lays it out, whose daemons are real
processes with the daemons' names (sleep, started under those names), so DevCluster's own liveness check — PID file
plus process name — finds it running. sinfo and sbatch are the real ones; with SLURM_CONF unset and no system
config, sinfo fails at once, which is "no controller".
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launch.cluster.dev_cluster import DAEMONS
from launch.cluster.discover import no_controller_hint, running_cluster, state_dir_of
from launch.cluster.host import cpu_count
from launch.cluster.layout import Layout
from launch.launcher import SchedulerError
from launch.slurm.submit import DEFAULT_CPUS_PER_TASK, build_executor, check_settings, member_cpus
from orchestra.cli import main

needs_slurm_clients = pytest.mark.skipif(not (shutil.which("sinfo") and shutil.which("sbatch")),
                                         reason="needs SLURM's client commands (launch/cluster/install.sh)")


def _state_dir(root: Path) -> Layout:
    """The files `orchestra cluster up` leaves that these checks read: slurm.conf (with its StateSaveLocation)."""
    layout = Layout(root)
    layout.create()
    layout.slurm_conf.write_text(f"ClusterName=orchestra\nStateSaveLocation={layout.statesave}\n")
    return layout


@pytest.fixture()
def stopped_cluster(tmp_path) -> Layout:
    return _state_dir(tmp_path / "cluster")


@pytest.fixture()
def running_dev_cluster(tmp_path) -> Iterator[Layout]:
    layout = _state_dir(tmp_path / "cluster")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = []
    try:
        for name in DAEMONS:
            (bin_dir / name).symlink_to(shutil.which("sleep"))  # the process is named after the link
            process = subprocess.Popen([str(bin_dir / name), "300"])
            started.append(process)
            layout.pidfile(name).write_text(f"{process.pid}\n")
        yield layout
    finally:
        for process in started:
            process.kill()
            process.wait()


@pytest.fixture()
def no_slurm_conf(monkeypatch):
    monkeypatch.delenv("SLURM_CONF", raising=False)


def test_state_dir_of_knows_a_dev_cluster_conf_from_another(stopped_cluster, tmp_path):
    assert state_dir_of(stopped_cluster.slurm_conf) == stopped_cluster.root
    other = tmp_path / "slurm.conf"
    other.write_text("ClusterName=site\nStateSaveLocation=/var/spool/slurmctld\n")
    assert state_dir_of(other) is None
    assert state_dir_of(tmp_path / "missing.conf") is None
    assert state_dir_of(None) is None


def test_running_cluster_is_found_and_a_stopped_one_is_not(running_dev_cluster, stopped_cluster, tmp_path):
    assert running_cluster([tmp_path / "nothing-here"]) is None
    assert running_cluster([running_dev_cluster.root]).slurm_conf == running_dev_cluster.slurm_conf


@needs_slurm_clients
def test_no_controller_but_a_running_dev_cluster_says_which_export(running_dev_cluster, no_slurm_conf):
    with pytest.raises(SchedulerError) as raised:
        check_settings({"partition": None}, dev_cluster_dirs=[running_dev_cluster.root])
    message = str(raised.value)
    assert "\n" not in message
    assert "sinfo failed" in message
    assert message.endswith(f"export SLURM_CONF={running_dev_cluster.slurm_conf}")


@needs_slurm_clients
def test_no_controller_and_no_dev_cluster_keeps_the_general_advice(tmp_path, no_slurm_conf):
    with pytest.raises(SchedulerError, match="check SLURM_CONF / slurmctld, or run locally with launcher=local"):
        check_settings({"partition": None}, dev_cluster_dirs=[tmp_path / "no-cluster"])


@needs_slurm_clients
def test_slurm_conf_of_a_stopped_dev_cluster_says_start_it(stopped_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_CONF", str(stopped_cluster.slurm_conf))
    with pytest.raises(SchedulerError) as raised:
        check_settings({"partition": None}, dev_cluster_dirs=[tmp_path / "no-cluster"])
    assert str(raised.value).endswith(f"which is not running: orchestra cluster up --dir {stopped_cluster.root}")


def test_hint_when_slurm_conf_already_is_the_running_clusters(running_dev_cluster):
    hint = no_controller_hint([], str(running_dev_cluster.slurm_conf))
    assert "is running but its controller does not answer" in hint
    assert str(running_dev_cluster.log("slurmctld")) in hint


# --- cpus_per_task: auto --------------------------------------------------------------------------------------------


def _params(tmp_path: Path, **settings) -> dict:
    return build_executor(tmp_path, {"name": "slurm", **settings}).parameters


def test_auto_is_the_default_off_a_dev_cluster_and_an_int_is_taken_as_given(tmp_path, no_slurm_conf):
    params = _params(tmp_path, cpus_per_task="auto")
    assert params["cpus_per_task"] == DEFAULT_CPUS_PER_TASK
    assert "setup" not in params  # nothing else changes on a real cluster
    assert _params(tmp_path, cpus_per_task=6)["cpus_per_task"] == 6
    assert member_cpus({"cpus_per_task": "3"}) == (3, False)


def test_auto_on_a_dev_cluster_shares_this_machines_cpus(stopped_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_CONF", str(stopped_cluster.slurm_conf))
    expected = max(1, min(DEFAULT_CPUS_PER_TASK, cpu_count() // 16))
    params = _params(tmp_path, cpus_per_task="auto", array_parallelism=16, setup=["module load x"])
    assert params["cpus_per_task"] == expected
    # task/none binds no CPUs there: the member is told its thread count, unless the caller set one
    assert params["setup"] == [f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{expected}}}", "module load x"]
    one_at_a_time = _params(tmp_path, cpus_per_task="auto", array_parallelism=1)["cpus_per_task"]
    assert one_at_a_time == max(1, min(DEFAULT_CPUS_PER_TASK, cpu_count()))
    assert _params(tmp_path, cpus_per_task=4, array_parallelism=16)["cpus_per_task"] == 4  # explicit wins


def test_shipped_default_is_auto_and_the_dry_run_script_shows_the_size(stopped_cluster, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLURM_CONF", str(stopped_cluster.slurm_conf))
    code = main(["sweep", "method=simclr,byol", "launcher=slurm", "launcher.array_parallelism=3", "-m", "--dry-run",
                 f"output_root={tmp_path / 'runs'}"])
    out = capsys.readouterr().out
    assert code == 0, out
    cpus = max(1, min(DEFAULT_CPUS_PER_TASK, cpu_count() // 3))
    assert f"#SBATCH --cpus-per-task={cpus}\n" in out
    assert f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{cpus}}}" in out
    assert not (tmp_path / "runs").exists()
