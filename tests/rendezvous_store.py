"""A rendezvous store for real multi-process gloo tests, hosted by the test process on a port it binds itself.

Finding a free port, releasing it and letting rank 0 bind it later is a race: any process on the machine (another
test, another worker) may take the port in between. Instead the test process starts the TCPStore server on port 0
(the kernel picks a free port and the server keeps it) and every rank joins as a client, the way torchrun's agent
hosts the store for its workers (``TORCHELASTIC_USE_AGENT_STORE``: torch's env:// rendezvous then connects to
MASTER_ADDR:MASTER_PORT instead of serving it from rank 0). The ranks' process group is the same real gloo group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from torch.distributed import TCPStore

HOST = "127.0.0.1"


class HostedStore:
    """The server end of a rendezvous; keep it alive until every rank has ended (gloo may use it after init)."""

    def __init__(self, timeout_s: float = 300) -> None:
        self.store = TCPStore(HOST, 0, None, True, timedelta(seconds=timeout_s), wait_for_workers=False)
        self.port = self.store.port

    def env(self) -> dict[str, str]:
        """What every rank's environment needs to join this store (with its own RANK and WORLD_SIZE)."""
        return {"MASTER_ADDR": HOST, "MASTER_PORT": str(self.port), "TORCHELASTIC_USE_AGENT_STORE": "True"}


@contextmanager
def hosted_store_env() -> Iterator[HostedStore]:
    """A hosted store whose variables are in os.environ meanwhile (for ranks started with torch.multiprocessing,
    which inherit this process's environment); the environment is restored afterwards."""
    hosted = HostedStore()
    saved = {key: os.environ.get(key) for key in hosted.env()}
    os.environ.update(hosted.env())
    try:
        yield hosted
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        del hosted.store
