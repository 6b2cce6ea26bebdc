"""A member's job id as the manifest records it: a local process or a SLURM array task, never a bare string test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LOCAL_PREFIX = "local:"


@dataclass(frozen=True)
class JobId:
    launcher: Literal["local", "slurm"]
    value: str  # a process id for "local"; "<array>_<task>" (or a plain job id) for "slurm"

    @classmethod
    def parse(cls, text: str) -> JobId:
        """From the manifest's text form: ``local:<pid>`` or a SLURM job id."""
        if text.startswith(LOCAL_PREFIX):
            return cls("local", text[len(LOCAL_PREFIX):])
        return cls("slurm", text)

    @classmethod
    def local(cls, pid: int) -> JobId:
        return cls("local", str(pid))

    def __str__(self) -> str:
        return f"{LOCAL_PREFIX}{self.value}" if self.launcher == "local" else self.value

    @property
    def pid(self) -> int | None:
        """The process id of a local member (None for SLURM, or when the record is damaged)."""
        if self.launcher != "local":
            return None
        try:
            return int(self.value)
        except ValueError:
            return None

    @property
    def array(self) -> str:
        """The SLURM array (or job) this task belongs to."""
        return self.value.split("_")[0]
