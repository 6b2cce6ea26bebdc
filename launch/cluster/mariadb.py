"""A private MariaDB for slurmdbd: datadir in the state dir, non-default port, bound to 127.0.0.1.

Accounting matters because submitit polls `sacct`; without slurmdbd a cancelled or killed job is never seen as
finished and `job.result()` hangs. The server is private so it never touches a system MariaDB or its port.
"""

from __future__ import annotations

import shutil
import subprocess

from launch.cluster.errors import ClusterError
from launch.cluster.host import find_binary
from launch.cluster.layout import Layout

DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
# slurmdbd connects over TCP to 127.0.0.1 and the server skips name resolution, so the account is for that address.
DB_HOST = "127.0.0.1"


def ensure_datadir(layout: Layout, timeout: float) -> None:
    """Initialise the datadir once. Done in a side directory and renamed, so an interrupted first start leaves no
    half-initialised datadir that later starts would trust."""
    if (layout.db_dir / "mysql").is_dir():
        return
    staging = layout.root / "mariadb.init"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        find_binary("mariadb-install-db"),
        "--no-defaults",
        "--user=root",
        f"--datadir={staging}",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"mariadb-install-db did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ClusterError(f"mariadb-install-db failed ({done.returncode}): {last[0]}")
    shutil.rmtree(layout.db_dir, ignore_errors=True)
    staging.rename(layout.db_dir)


def argv(layout: Layout, port: int) -> list[str]:
    return [
        find_binary("mariadbd"),
        "--no-defaults",
        "--user=root",
        f"--datadir={layout.db_dir}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        f"--socket={layout.db_socket}",
        f"--pid-file={layout.pidfile('mariadbd')}",
        f"--log-error={layout.log('mariadbd')}",
        "--skip-name-resolve",
        # Small footprint: this server holds a few hundred job rows and shares the machine with real work.
        "--innodb-buffer-pool-size=32M",
        "--skip-log-bin",
    ]


def sql(layout: Layout, statement: str, timeout: float = 15.0) -> str:
    """Run SQL as the database root over the private socket (root authenticates by socket, no password)."""
    cmd = [find_binary("mariadb"), "--no-defaults", f"--socket={layout.db_socket}", "-uroot", "-N", "-B", "-e"]
    try:
        done = subprocess.run([*cmd, statement], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"mariadb query timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        raise ClusterError(f"mariadb query failed: {done.stderr.strip()}")
    return done.stdout


def is_ready(layout: Layout) -> bool:
    try:
        return sql(layout, "SELECT 1", timeout=5.0).strip() == "1"
    except ClusterError:
        return False


def grant_slurm_user(layout: Layout, password: str) -> None:
    """Create (or re-key) the account slurmdbd uses. The password is fresh on every start and lives only in the
    0600 slurmdbd.conf, so nothing secret persists between runs."""
    account = f"'{DB_USER}'@'{DB_HOST}'"
    sql(
        layout,
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'; "
        f"ALTER USER {account} IDENTIFIED BY '{password}'; "
        f"GRANT ALL ON {DB_NAME}.* TO {account}; FLUSH PRIVILEGES;",
    )


def max_job_id(layout: Layout, cluster_name: str) -> int:
    """Highest job id this cluster has ever recorded (0 if none).

    `slurmctld -c` forgets its job-id counter, so without this each restart would reuse ids 1, 2, ... and sacct
    would report two different jobs under one id.
    """
    table = f"{cluster_name}_job_table"
    exists = sql(
        layout,
        f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='{DB_NAME}' AND table_name='{table}'",
    )
    if exists.strip() != "1":
        return 0
    return int(sql(layout, f"SELECT COALESCE(MAX(id_job), 0) FROM {DB_NAME}.{table}").strip())
