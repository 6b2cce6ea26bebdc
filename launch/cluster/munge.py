"""munged for the cluster: a private key and socket inside the state dir, the daemon run as the `munge` user.

munged checks ownership and permissions strictly (key owned by its user and unreadable by others, no
group/other-writable directories on the path), so the directory and key are created here exactly as it wants.
"""

from __future__ import annotations

import os
import secrets

from launch.cluster.host import find_binary, user_ids
from launch.cluster.layout import Layout

MUNGE_USER = "munge"
KEY_BYTES = 1024  # munged accepts 32 bytes and up; 1024 is what `mungekey` generates by default.


def prepare(layout: Layout) -> None:
    uid, gid = user_ids(MUNGE_USER)
    layout.munge_dir.mkdir(parents=True, exist_ok=True)
    os.chown(layout.munge_dir, uid, gid)
    os.chmod(layout.munge_dir, 0o755)
    if not layout.munge_key.exists():
        # Created with mode 0400 from the start so the key is never briefly readable by others.
        fd = os.open(layout.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as key:
            key.write(secrets.token_bytes(KEY_BYTES))
    os.chown(layout.munge_key, uid, gid)
    # A socket left by a killed munged would make the readiness check pass before the new daemon is listening.
    layout.munge_socket.unlink(missing_ok=True)


def argv(layout: Layout) -> list[str]:
    # setpriv execs munged in place, so the PID we record is munged's own. In the foreground munged logs to stderr,
    # which lands in the console file; a --log-file would have to live in a directory the munge user may write.
    return [
        find_binary("setpriv"),
        f"--reuid={MUNGE_USER}",
        f"--regid={MUNGE_USER}",
        "--clear-groups",
        find_binary("munged"),
        "--foreground",
        f"--socket={layout.munge_socket}",
        f"--key-file={layout.munge_key}",
        f"--pid-file={layout.munge_dir / 'munged.pid'}",
        f"--seed-file={layout.munge_seed}",
    ]


def is_ready(layout: Layout) -> bool:
    return layout.munge_socket.is_socket()
