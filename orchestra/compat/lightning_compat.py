"""The one place orchestra touches Lightning's private API.

What the public API lacks:

- ``WandbLogger`` keeps the keyword arguments it will pass to ``wandb.init`` in ``_wandb_init`` and the started run
  in ``_experiment``; there is no public way to edit the former (drop ``anonymous=None``, which makes wandb warn in
  every job log; switch to offline after a failed online start) or to supply the latter, which an ``experiment``
  property that survives a failed start (``orchestra.tracking.wandb_logger``) must do.
- ``DeepSpeedStrategy`` refuses every accelerator but CUDA in ``setup_environment`` and checks CUDA device indices in
  ``setup_distributed``, so a CPU rehearsal of a DeepSpeed config (``strategy.cpu_rehearsal=true``; DeepSpeed's own
  CPU accelerator, gloo between ranks) cannot go through them. Instead we call ``DDPStrategy.setup_environment``
  (its parent's, past DeepSpeed's override in the MRO) and, for the distributed setup, Lightning's steps without the
  index check, ending in the private ``DeepSpeedStrategy._init_deepspeed_distributed``.

Tested with lightning 2.4-2.6 (pyproject bounds it below 2.7). ``tests/compat/test_compat_lightning.py`` fails with one
line naming the installed version when one of these names moves. Every function imports Lightning only when called.
"""

from __future__ import annotations

from typing import Any

TESTED = "2.6"


def wandb_init_kwargs(logger: Any) -> dict[str, Any]:
    """The live dict a ``WandbLogger`` passes to ``wandb.init``: changing it changes the run it will start."""
    return logger._wandb_init


def wandb_run(logger: Any) -> Any:
    """The run a ``WandbLogger`` has started (or was given), None before its first ``experiment`` access."""
    return logger._experiment


def set_wandb_run(logger: Any, run: Any) -> None:
    """Makes ``run`` the one ``logger.experiment`` returns from now on."""
    logger._experiment = run


def deepspeed_setup_environment_on_cpu(strategy: Any) -> None:
    """``DeepSpeedStrategy.setup_environment`` without its CUDA-only refusal: the DDP parent's, past the MRO."""
    from lightning.pytorch.strategies import DeepSpeedStrategy
    from lightning.pytorch.strategies.ddp import DDPStrategy

    if not issubclass(DeepSpeedStrategy, DDPStrategy):
        raise TypeError("lightning's DeepSpeedStrategy no longer derives from DDPStrategy")
    DDPStrategy.setup_environment(strategy)


def deepspeed_setup_distributed_on_cpu(strategy: Any) -> None:
    """``DeepSpeedStrategy.setup_distributed`` without its CUDA device-index check (CPU devices have index None)."""
    from lightning.fabric.utilities.seed import reset_seed

    reset_seed()
    strategy.set_world_ranks()
    strategy._init_deepspeed_distributed()
