"""lightning_compat still reaches Lightning's private API; if it moved, one line names the installed lightning."""

from __future__ import annotations

import os
from importlib.metadata import version

import pytest

from orchestra.compat import lightning_compat


def _moved(what: str, err: BaseException | str) -> BaseException:
    """The one-line failure, raised ``from None`` by callers so no traceback of the private call is printed."""
    detail = (err if isinstance(err, str) else f"{type(err).__name__}: {err}").strip().splitlines()
    message = (f"lightning {version('lightning')} (tested {lightning_compat.TESTED}.x): {what} moved or changed "
               f"({detail[0] if detail else '?'}); update orchestra/compat/lightning_compat.py")
    return pytest.fail.Exception(message, pytrace=False)


def test_wandb_logger_init_kwargs_are_what_it_passes_to_wandb_init(monkeypatch, tmp_path):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    what = "WandbLogger._wandb_init"
    calls = []
    run = object()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or run)
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = WandbLogger(project="compat-probe", save_dir=str(tmp_path))
    try:
        kwargs = lightning_compat.wandb_init_kwargs(logger)
        kwargs["tags"] = ["edited"]
        kwargs.pop("anonymous", None)
        experiment = logger.experiment  # Lightning's own property starts the run from those kwargs
    except (AttributeError, TypeError) as err:
        raise _moved(what, err) from None
    if len(calls) != 1 or calls[0].get("project") != "compat-probe" or calls[0].get("tags") != ["edited"] \
            or "anonymous" in calls[0]:
        raise _moved(what, f"wandb.init got {calls}") from None
    if experiment is not run or lightning_compat.wandb_run(logger) is not run:
        raise _moved("WandbLogger._experiment", "the started run is not kept there") from None


def test_wandb_logger_experiment_returns_the_run_set_on_it(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    what = "WandbLogger._experiment"
    logger = WandbLogger(project="compat-probe", save_dir=str(tmp_path))
    run = object()
    try:
        if lightning_compat.wandb_run(logger) is not None:
            raise _moved(what, "a fresh logger already holds a run") from None
        lightning_compat.set_wandb_run(logger, run)
    except AttributeError as err:
        raise _moved(what, err) from None
    if logger.experiment is not run:  # would otherwise call wandb.init
        raise _moved(what, "WandbLogger.experiment no longer returns it") from None


def _cpu_deepspeed_strategy():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    pytest.importorskip("deepspeed")
    import torch
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(accelerator=CPUAccelerator(), parallel_devices=[torch.device("cpu")],
                             cluster_environment=LightningEnvironment(), process_group_backend="gloo")


def test_deepspeed_setup_environment_on_cpu_is_ddps_past_the_mro(monkeypatch):
    strategy = _cpu_deepspeed_strategy()
    with pytest.raises(RuntimeError, match="CUDA"):  # why the compat exists: DeepSpeed's own refuses the CPU
        strategy.setup_environment()
    distributed = []
    monkeypatch.setattr(strategy, "setup_distributed", lambda: distributed.append(True))
    try:
        lightning_compat.deepspeed_setup_environment_on_cpu(strategy)
    except (ImportError, AttributeError, TypeError, RuntimeError) as err:
        raise _moved("DDPStrategy.setup_environment as DeepSpeedStrategy's parent", err) from None
    if distributed != [True]:
        raise _moved("DDPStrategy.setup_environment", "it no longer calls setup_distributed") from None


def test_deepspeed_setup_distributed_on_cpu_reaches_init_deepspeed_distributed(monkeypatch):
    import deepspeed

    strategy = _cpu_deepspeed_strategy()
    calls = []
    monkeypatch.setattr(deepspeed, "init_distributed", lambda *args, **kwargs: calls.append((args, kwargs)))
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    try:
        lightning_compat.deepspeed_setup_distributed_on_cpu(strategy)
    except (ImportError, AttributeError, TypeError) as err:
        raise _moved("DeepSpeedStrategy._init_deepspeed_distributed", err) from None
    if len(calls) != 1 or calls[0][0][:1] != ("gloo",) or strategy.world_size != 1:
        raise _moved("DeepSpeedStrategy._init_deepspeed_distributed", f"init_distributed got {calls}") from None
