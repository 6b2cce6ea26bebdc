"""``<job_dir>/csv/metrics.csv`` that only grows: every attempt of a member appends its rows.

Lightning's CSV logger deletes an existing metrics file when it starts, so each requeue, retry or resume lost the
rows written before the interruption. This logger keeps them, adds an ``attempt`` column (a resumed or replayed
step shows which attempt wrote it), and rewrites the file atomically only when a new column appears.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from launch.atomic import write_text

METRICS_FILE = "metrics.csv"


class AppendingCSVLogger(Logger):
    def __init__(self, save_dir: Path, attempt: int) -> None:
        super().__init__()
        self.folder = Path(save_dir) / "csv"
        self.path = self.folder / METRICS_FILE
        self.attempt = attempt
        self.pending: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.folder.parent)

    @property
    def log_dir(self) -> str:
        return str(self.folder)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None  # the job directory's config.yaml already holds every setting

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {key: float(value) for key, value in metrics.items()}
        self.pending.append({"attempt": self.attempt, "step": step, **row})

    @rank_zero_only
    def save(self) -> None:
        if not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        header = _header(self.path)
        keys = list(dict.fromkeys(k for row in self.pending for k in row))
        if header and set(keys) <= set(header):
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=header).writerows(self.pending)
        else:  # a first row, or a new column: the whole file again, under one header holding every column
            columns = list(dict.fromkeys([*header, *keys]))
            rows = [*_rows(self.path), *self.pending]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
            write_text(self.path, text.getvalue())
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle), [])
    except FileNotFoundError:
        return []


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []
