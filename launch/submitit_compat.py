"""The one place launch touches submitit's private API.

submitit's public API submits jobs but cannot show the sbatch script it would submit, which ``orchestra sweep
... --dry-run`` prints. ``_make_sbatch_string`` and ``SlurmExecutor._submitit_command_str`` build exactly that
script; tested with submitit 1.5.x (pyproject bounds it below 1.6). ``tests/launch/test_compat.py`` fails with the
installed version in its message when either name moves.
"""

from __future__ import annotations

from typing import Any

TESTED = "1.5"


def array_sbatch_script(executor: Any, members: int) -> str:
    """The script ``executor`` (a ``submitit.SlurmExecutor``) would hand to sbatch for a ``members``-task array."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=executor._submitit_command_str, folder=executor.folder,
                               **{**executor.parameters, "map_count": members})
