"""``orchestra eval SWEEP_DIR|JOB_DIR``: offline linear evaluation of a member's frozen backbone.

Protocol (recorded in results.json with the number): the backbone from ``checkpoints/last.ckpt``, rebuilt from the
member's own config.yaml, embeds the UNAUGMENTED training and validation images of the member's data config (the
same splits the online probe and kNN used). Features are standardised with the training mean/std. A multinomial
logistic regression (a linear layer + cross-entropy, L2 penalty) is fitted full-batch with L-BFGS from zero
weights; its L2 strength is chosen from a fixed grid on a seeded 10% hold-out of the training images, then the
classifier is refitted on all training images. Reported: top-1 on the validation split. Zero initialisation,
full-batch optimisation and a seeded hold-out make it deterministic (up to floating-point reduction order on GPU).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from launch.atomic import write_json
from orchestra.errors import UserError
from orchestra.jobstate.results import read_checked_results

PROTOCOL = ("frozen backbone from checkpoints/last.ckpt; embeddings of the unaugmented train and validation "
            "images; features standardised with train mean/std; multinomial logistic regression fitted full-batch "
            "with L-BFGS from zero weights, L2 strength chosen on a seeded 10% train hold-out from "
            "{grid}, then refitted on all train images; top-1 on the validation split")
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_ITERATIONS = 100
HOLDOUT_FRACTION = 0.1
SMALL_PROBLEM = 4_000_000  # feature-matrix elements below which the classifier is fitted on one thread


def _fit_classifier(x, y, num_classes: int, weight_decay: float):
    import torch

    layer = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=MAX_ITERATIONS, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + weight_decay / 2 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def _top1(layer, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((layer(x).argmax(1) == y).float().mean())


def linear_top1(train_x, train_y, val_x, val_y, num_classes: int, seed: int = 0) -> tuple[float, float]:
    """Validation top-1 of the protocol's classifier and the L2 strength it chose."""
    import torch

    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).to(train_x.device)
    held = max(1, int(len(train_x) * HOLDOUT_FRACTION))
    hold, fit = order[:held], order[held:]
    threads = torch.get_num_threads()
    if train_x.device.type == "cpu" and train_x.numel() < SMALL_PROBLEM:
        # Small fits are all per-iteration overhead; extra threads only add barrier waits (10x slower when busy).
        torch.set_num_threads(1)
    try:
        scores = [_top1(_fit_classifier(train_x[fit], train_y[fit], num_classes, wd), train_x[hold], train_y[hold])
                  for wd in WEIGHT_DECAYS]
        chosen = WEIGHT_DECAYS[max(range(len(scores)), key=lambda i: (scores[i], i))]  # ties: the stronger penalty
        layer = _fit_classifier(train_x, train_y, num_classes, chosen)
    finally:
        torch.set_num_threads(threads)
    return _top1(layer, val_x, val_y), chosen


def _embeddings(module, loader, device) -> tuple[Any, Any]:
    import torch

    features, labels = [], []
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            features.append(module(batch, stage="val")["embedding"].float().flatten(1))
            labels.append(batch["label"])
    return torch.cat(features), torch.cat(labels)


def _load_backbone(job_dir: Path, cfg):
    """The member's Module with the checkpoint's weights; evaluator heads and queues of the run are not needed."""
    from hydra.utils import instantiate

    module = instantiate(cfg.module, _convert_="all")
    checkpoint_path = job_dir / "checkpoints" / "last.ckpt"
    saved, step = _read_checkpoint(checkpoint_path)
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    if missing:
        raise UserError(f"{checkpoint_path} does not fit {job_dir / 'config.yaml'} (missing {', '.join(missing[:3])}"
                        f"); was the config edited after training? restore it or retrain the member")
    module.load_state_dict({k: saved[k] for k in own})
    return module.eval(), step


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], int]:
    """The full (unsharded) state dict and global step of a single-file, FSDP (DCP) or DeepSpeed last.ckpt."""
    import pickle

    try:
        return _load_checkpoint(path)
    except (RuntimeError, OSError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise UserError(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                        f"train the member again (orchestra resume) or evaluate another one") from None


def _load_checkpoint(path: Path) -> tuple[dict[str, Any], int]:
    import tempfile

    import torch

    if path.is_file():
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own Lightning file
        return checkpoint.get("state_dict", {}), int(checkpoint.get("global_step", -1))
    if (path / "latest").is_file():  # DeepSpeed's directory: ZeRO shards merged into one fp32 state dict
        return _load_deepspeed_checkpoint(path)
    if not (path / ".metadata").is_file():
        raise UserError(f"{path} is a directory but neither an FSDP nor a DeepSpeed checkpoint; train the member "
                        f"again (orchestra resume)")
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as scratch:  # the shards gathered into one file, on this process only
        dcp_to_torch_save(path, Path(scratch) / "full.pt")
        state = torch.load(Path(scratch) / "full.pt", map_location="cpu", weights_only=False)["state_dict"]
    meta = path / "meta.pt"  # Lightning's non-tensor part: epoch, global_step, loops
    step = int(torch.load(meta, weights_only=False).get("global_step", -1)) if meta.is_file() else -1
    return state, step


def _load_deepspeed_checkpoint(path: Path) -> tuple[dict[str, Any], int]:
    import tempfile

    import torch

    try:
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict
    except ImportError:
        raise UserError(f"{path} is a DeepSpeed checkpoint; reading it needs: pip install deepspeed") from None
    with tempfile.TemporaryDirectory() as scratch:
        convert_zero_checkpoint_to_fp32_state_dict(str(path), str(Path(scratch) / "full.pt"))
        checkpoint = torch.load(Path(scratch) / "full.pt", map_location="cpu", weights_only=False)
    return checkpoint["state_dict"], int(checkpoint.get("global_step", -1))


def evaluate(job_dir: Path) -> dict[str, Any]:
    """Run the protocol on one completed member and add ``linear_top1`` to its results.json (atomically)."""
    import torch
    from omegaconf import OmegaConf

    from orchestra.data.datamodule import build_datamodule
    from orchestra.tracking.quiet_logs import quiet_lightning

    quiet_lightning()
    cfg = OmegaConf.load(job_dir / "config.yaml")
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    datamodule = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), seed)
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module, step = _load_backbone(job_dir, cfg)
    module.to(device)
    train_x, train_y = _embeddings(module, datamodule.bank_dataloader(), device)
    val_x, val_y = _embeddings(module, datamodule.val_dataloader(), device)
    top1, weight_decay = linear_top1(train_x, train_y, val_x, val_y, datamodule.num_classes, seed)
    protocol = PROTOCOL.format(grid=", ".join(f"{wd:g}" for wd in WEIGHT_DECAYS))
    results = read_checked_results(job_dir / "results.json")  # changed while we trained? then it is not written
    results["linear_top1"] = round(top1, 6)
    results["linear_eval"] = {
        "top1": round(top1, 6), "weight_decay": weight_decay, "train_images": len(train_y), "val_images": len(val_y),
        "embedding_dim": int(train_x.shape[1]), "checkpoint": "checkpoints/last.ckpt", "checkpoint_step": step,
        "device": device.type, "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    results.setdefault("evaluation", {})["offline_linear"] = protocol
    write_json(job_dir / "results.json", results)
    return results
