"""Rendering slurm.conf and slurmdbd.conf for a one-node, loopback-only cluster.

Every setting below is here for a reason observed on these machines (see shared/notes/slurm-single-node.md);
the comments say which. Rendering is pure: values in, text out; `write` puts the files in place with the modes
the daemons insist on.
"""

from __future__ import annotations

from dataclasses import dataclass

from launch.atomic import write_text
from launch.cluster.layout import Layout

PARTITION = "debug"


@dataclass(frozen=True)
class Settings:
    cluster_name: str
    node_name: str
    node_cpus: int  # declared CPUs; may exceed the real count (config_overrides) so several jobs run at once
    real_memory_mb: int
    slurmctld_port: int
    slurmd_port: int
    slurmdbd_port: int
    db_port: int
    db_password: str
    first_job_id: int


def render_slurm_conf(layout: Layout, s: Settings) -> str:
    munge_socket = layout.munge_socket
    lines = [
        f"ClusterName={s.cluster_name}",
        # The node is its own controller, reached over loopback only.
        f"SlurmctldHost={s.node_name}(127.0.0.1)",
        f"SlurmctldPort={s.slurmctld_port}",
        f"SlurmdPort={s.slurmd_port}",
        # Bind slurmctld to 127.0.0.1 instead of every interface. Not NoInAddrAny: it makes slurmd and every client
        # bind to whatever `hostname` resolves to (127.0.1.1 on stock Debian), which loopback NodeAddr traffic
        # would then miss. slurmd/slurmdbd keep the wildcard bind; munge authentication guards them.
        "CommunicationParameters=NoCtldInAddrAny",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire=10: the default 120 s is also how long a requeued job must wait before it may start again.
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        f"StateSaveLocation={layout.statesave}",
        f"SlurmdSpoolDir={layout.spool}",
        f"SlurmctldPidFile={layout.pidfile('slurmctld')}",
        f"SlurmdPidFile={layout.pidfile('slurmd')}",
        f"SlurmctldLogFile={layout.log('slurmctld')}",
        f"SlurmdLogFile={layout.log('slurmd')}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # No cgroups on these machines: track processes by parentage, do no task binding, gather no usage.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # Schedule every 2 s; otherwise a requeued job can sit pending for up to a minute.
        "SchedulerParameters=sched_interval=2,bf_interval=1",
        # Accept the node's declared CPUs/memory even where they exceed the hardware.
        "SlurmdParameters=config_overrides",
        # Accounting through slurmdbd: submitit polls sacct, and only accounting sees cancelled/killed jobs end.
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={s.slurmdbd_port}",
        # With a non-default munge socket, the accounting plugin takes the socket path from here.
        f"AccountingStoragePass={munge_socket}",
        "JobCompType=jobcomp/none",
        # Restart-proof job ids: see mariadb.max_job_id.
        f"FirstJobId={s.first_job_id}",
        # Short timeouts suit a dev cluster: cancelled jobs die fast, finished jobs leave squeue fast.
        "KillWait=5",
        "MinJobAge=10",
        "InactiveLimit=0",
        # A node that went DOWN (e.g. slurmd restarted) comes back by itself once it registers.
        "ReturnToService=2",
        # Jobs may be requeued (submitit's preemption/timeout handling requeues itself).
        "JobRequeue=1",
        "MailProg=/bin/true",
        f"NodeName={s.node_name} NodeAddr=127.0.0.1 CPUs={s.node_cpus} RealMemory={s.real_memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={s.node_name} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def render_slurmdbd_conf(layout: Layout, s: Settings) -> str:
    lines = [
        "AuthType=auth/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        "DbdHost=localhost",
        "DbdAddr=127.0.0.1",
        f"DbdPort={s.slurmdbd_port}",
        "SlurmUser=root",
        f"PidFile={layout.pidfile('slurmdbd')}",
        f"LogFile={layout.log('slurmdbd')}",
        "DebugLevel=info",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={s.db_port}",
        "StorageUser=slurm",
        f"StoragePass={s.db_password}",
        "StorageLoc=slurm_acct_db",
    ]
    return "\n".join(lines) + "\n"


def write(layout: Layout, s: Settings) -> None:
    # The mode is set before the text is written: the password in slurmdbd.conf is never world-readable, and
    # slurmdbd refuses a slurmdbd.conf that others can read.
    write_text(layout.slurm_conf, render_slurm_conf(layout, s), 0o644)
    write_text(layout.slurmdbd_conf, render_slurmdbd_conf(layout, s), 0o600)
