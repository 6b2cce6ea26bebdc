"""A member's job directory: the one place that knows its file names, and how a new one is made.

A job directory is stable across requeues and retries: everything a later attempt needs (its config, the last
checkpoint, the results so far) lives here, so any launcher can start the member again from the path alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from launch.atomic import write_text
from orchestra.errors import UserError

PREVIOUS_CHECKPOINT = "previous.ckpt"


@dataclass(frozen=True)
class JobDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"  # every requeue and retry reads it

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"  # a file, or a link to a sharded checkpoint directory

    @property
    def previous_checkpoint(self) -> Path:
        return self.checkpoints / PREVIOUS_CHECKPOINT  # what last.ckpt was before its latest save (files only)

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def wandb(self) -> Path:
        return self.path / "wandb"

    def is_job_dir(self) -> bool:
        return self.config.is_file()

    def write_config(self, yaml_text: str) -> None:
        """Create the directory and write its config atomically; one line naming the fix when it cannot."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text(self.config, yaml_text)
        except OSError as err:
            raise UserError(f"cannot write {self.path} ({err.strerror}); set output_root=<a writable folder>"
                            ) from None


def unreadable_aside(path: Path) -> Path:
    """Where an unreadable file (results, checkpoint) is moved, kept beside ``path``: a name no earlier one has."""
    when = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}.unreadable-{when}"), 1
    while candidate.exists() or candidate.is_symlink():
        candidate, n = path.with_name(f"{path.name}.unreadable-{when}-{n}"), n + 1
    return candidate


def stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def unique_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def prepare_job_dir(job_dir: Path, cfg: Any) -> None:
    """A job directory for ``orchestra train``: the composed config, with its own path recorded in it."""
    from orchestra.config.compose import to_yaml

    cfg.job_dir = str(Path(job_dir).resolve())
    JobDir(Path(job_dir)).write_config(to_yaml(cfg))


def write_job_config(job_dir: Path, container: dict) -> None:
    """A sweep member's job directory, from its resolved config."""
    from orchestra.config.rendering import config_yaml

    JobDir(Path(job_dir)).write_config(config_yaml(container))
