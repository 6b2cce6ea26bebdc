"""What a job log shows: our progress lines, not Lightning's tips and third-party deprecation notes."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """Job logs carry our progress lines; Lightning's tips and third-party deprecation notes only bury them."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # "not resumable": our sampler resumes mid-epoch itself (see orchestra.jobstate.preemption), Lightning cannot
    # see that. "LightningDataModule": our Module's batch hooks are meant to win. "srun": a local member on a
    # machine that happens to have SLURM installed is not a mistake. "sync_dist": evaluators add their counts over
    # ranks before they are logged (orchestra.callbacks.accuracy), so Lightning's averaging would be wrong.
    for pattern in (".*LeafSpec.*", ".*weights_only.*", ".*does not have many workers.*", ".*not resumable.*",
                    ".*but have passed in a `LightningDataModule`.*", ".*The `srun` command is available.*",
                    ".*sync_dist=True.*when logging on epoch level.*"):
        warnings.filterwarnings("ignore", message=pattern)
