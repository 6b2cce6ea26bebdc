"""launch.cluster without daemons: rendered settings, path and binary checks, and the CLI on a stopped cluster.
These run everywhere, also where the SLURM packages are missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.cluster import ClusterError, DevCluster, cli, config, host
from launch.cluster.layout import Layout


def _settings() -> config.Settings:
    return config.Settings(
        cluster_name="orchestra",
        node_name="box",
        node_cpus=8,
        real_memory_mb=4096,
        slurmctld_port=21001,
        slurmd_port=21002,
        slurmdbd_port=21003,
        db_port=21004,
        db_password="secret",
        first_job_id=17,
    )


def test_slurm_conf_has_the_settings_that_matter() -> None:
    text = config.render_slurm_conf(Layout(Path("/tmp/x")), _settings())
    lines = set(text.splitlines())
    for expected in (
        "SlurmctldHost=box(127.0.0.1)",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerParameters=sched_interval=2,bf_interval=1",
        "SlurmdParameters=config_overrides",
        "AuthInfo=socket=/tmp/x/munge/sock,cred_expire=10",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStoragePass=/tmp/x/munge/sock",
        "FirstJobId=17",
        "KillWait=5",
        "ReturnToService=2",
        "JobRequeue=1",
        "NodeName=box NodeAddr=127.0.0.1 CPUs=8 RealMemory=4096 State=UNKNOWN",
        "PartitionName=debug Nodes=box Default=YES MaxTime=INFINITE State=UP",
    ):
        assert expected in lines, expected


def test_slurmdbd_conf_points_at_the_private_database() -> None:
    lines = set(config.render_slurmdbd_conf(Layout(Path("/tmp/x")), _settings()).splitlines())
    assert {"StorageHost=127.0.0.1", "StoragePort=21004", "StoragePass=secret", "DbdPort=21003"} <= lines


def test_a_state_dir_too_long_for_sockets_is_refused() -> None:
    with pytest.raises(ClusterError, match="too long"):
        Layout(Path("/tmp/" + "d" * 120)).check_paths()


def test_a_missing_binary_names_the_install_command() -> None:
    expected = "no-such-slurm-daemon not found; install with: apt-get install -y slurm-wlm munge slurmdbd"
    with pytest.raises(ClusterError, match=expected):
        host.find_binary("no-such-slurm-daemon")


def test_cli_on_a_stopped_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "c"
    assert cli.main(["down", "--dir", str(state)]) == 0
    assert "cluster already down" in capsys.readouterr().out
    assert cli.main(["status", "--dir", str(state)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "slurmctld: stopped" in out
    assert f"export SLURM_CONF={state}/slurm.conf" in out
    assert DevCluster(state).status()["running"] is False
