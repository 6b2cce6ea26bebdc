"""Where everything lives inside the cluster's one state directory.

One directory holds configs, keys, the MariaDB datadir, spool and state, logs and PID files, so a cluster is
removed by deleting it and two clusters (a user's and the test suite's) never share a file. Kept short by default
(`/tmp/orchestra-slurm`) because UNIX socket paths are limited to ~108 bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from launch.cluster.errors import ClusterError

DEFAULT_STATE_DIR = Path("/tmp/orchestra-slurm")

# sun_path is 108 bytes on Linux; munged and mariadbd append suffixes (".lock") to their socket names.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF; it must sit beside slurm.conf.
        return self.root / "slurmdbd.conf"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "sock"

    @property
    def munge_seed(self) -> Path:
        return self.munge_dir / "seed"

    @property
    def db_dir(self) -> Path:
        return self.root / "mariadb"

    @property
    def db_socket(self) -> Path:
        return self.root / "run" / "db.sock"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def statesave(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def log(self, daemon: str) -> Path:
        """The daemon's own log file (munged, in the foreground, writes only to its console file)."""
        if daemon == "munged":
            return self.console(daemon)
        return self.log_dir / f"{daemon}.log"

    def console(self, daemon: str) -> Path:
        """stdout/stderr of the process we spawned: where a daemon that dies before opening its log says why."""
        return self.log_dir / f"{daemon}.out"

    def pidfile(self, daemon: str) -> Path:
        # The slurm daemons and mariadbd are pointed at these same files for their own PID files; the PID is the
        # same either way because each runs in the foreground as the process we spawned.
        return self.run_dir / f"{daemon}.pid"

    def check_paths(self) -> None:
        for sock in (self.munge_socket, self.db_socket):
            if len(str(sock)) > MAX_SOCKET_PATH:
                raise ClusterError(
                    f"state dir {self.root} is too long: socket path {sock} exceeds {MAX_SOCKET_PATH} characters"
                )

    def create(self) -> None:
        """Make the directories. Everything is world-traversable (o+x): munged refuses a socket directory that
        other users cannot reach, and clients running as other users need the munge socket."""
        self.check_paths()
        for path in (self.root, self.run_dir, self.statesave, self.spool, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o755)
