"""Training views from a RAW batch: decoded uint8 images of this rank's rows -> the batch of the contract.

A raw batch is what a training loader hands over before augmentation, on the CPU or already on the training device:

    raw         uint8 [n_local, C, S, S]   this rank's images, in the rank's row order
    label       int64 [n_local]
    sample_idx  int64 [n_local]            their global dataset rows
    batch_key   int64 [5]                  (epoch, index, rank, world_size, n_global)

``ViewBuilder`` turns it into ``image`` (view-major ``[views*n_local, C, size, size]``), ``label``, ``sample_idx`` and,
with local crops, ``local_image`` and ``local_sample_idx``, normalised. The random parameters of every view are drawn
on the CPU for all ``n_global`` images of the global batch from a generator seeded with (seed, epoch, batch, view),
then applied only to this rank's rows (chunk ``rank`` of ``tensor_split(arange(n_global), world_size)``) on the
images' device. So the views are a pure function of (seed, epoch, batch): a resumed run, a DDP rank's shard, a CPU
DataLoader and a GPU after the transfer all see the same ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from orchestra.data.augment import AugmentSpec, Recipe
from orchestra.data.augment_ops import apply_view, draw_view
from orchestra.errors import UserError

LOCAL_STREAM = 1  # local crop j draws from (seed, epoch, batch, j, LOCAL_STREAM): apart from the global views' streams
RAW_KEYS = ("raw", "label", "sample_idx", "batch_key")


def stream(*numbers: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of numbers; distinct tuples give distinct streams."""
    seed = 0
    for number in numbers:  # a simple mix
        seed = (seed * 1_000_003 + int(number) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def rank_rows(n_global: int, rank: int, world_size: int) -> torch.Tensor:
    """Positions in the global batch that rank ``rank`` of ``world_size`` holds: a contiguous chunk."""
    return torch.tensor_split(torch.arange(n_global), world_size)[rank]


def is_raw(batch: object) -> bool:
    return isinstance(batch, dict) and "raw" in batch and "batch_key" in batch


PIPELINES = ("cpu", "gpu", "auto")


def resolve_pipeline(pipeline: str, accelerator: str | None) -> str:
    """``data.pipeline`` as ``cpu`` or ``gpu``; ``auto`` is gpu when ``trainer.accelerator`` trains on CUDA.

    ``accelerator`` None (no trainer named, e.g. a script building the data module alone) keeps the views in the
    loader, where any caller can iterate them.
    """
    if pipeline not in PIPELINES:
        raise UserError(f"data.pipeline={pipeline!r} is not a pipeline; use one of: {', '.join(PIPELINES)}")
    if pipeline != "auto":
        return pipeline
    if accelerator in ("gpu", "cuda"):
        return "gpu"
    return "gpu" if accelerator == "auto" and torch.cuda.is_available() else "cpu"


class ViewBuilder:
    """``views`` global views of ``size`` pixels and ``local_views`` local crops of ``local_size`` from a raw batch.

    ``recipe`` may be a single spec (every view alike). ``normalize`` maps float images in [0, 1] to the model's
    input on whatever device they are on.
    """

    def __init__(
        self,
        recipe: AugmentSpec | Recipe,
        views: int,
        size: int,
        seed: int,
        normalize: Callable[[torch.Tensor], torch.Tensor],
        local_views: int = 0,
        local_size: int | None = None,
    ) -> None:
        self.recipe = recipe if isinstance(recipe, Recipe) else Recipe((recipe,), recipe)
        self.views, self.size, self.seed, self.normalize = views, size, seed, normalize
        self.local_views, self.local_size = local_views, local_size or max(1, size // 2)

    def __call__(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [key for key in RAW_KEYS if key not in raw]
        if missing:
            raise KeyError(f"a raw batch needs {', '.join(RAW_KEYS)}; missing {', '.join(missing)}")
        epoch, index, rank, world_size, n_global = (int(v) for v in raw["batch_key"].tolist())
        mine = rank_rows(n_global, rank, world_size)
        if mine.numel() != raw["raw"].shape[0]:
            raise ValueError(f"raw batch holds {raw['raw'].shape[0]} images but rank {rank} of {world_size} owns "
                             f"{mine.numel()} of a global batch of {n_global}")
        pixels = raw["raw"].float().div_(255)  # once for all views and crops
        sample_idx, label = raw["sample_idx"], raw["label"]
        views = [self._view(pixels, self.recipe.for_view(v), self.size, stream(self.seed, epoch, index, v),
                            n_global, mine) for v in range(self.views)]
        batch = {
            "image": self.normalize(torch.cat(views)),
            "label": label.repeat(self.views),
            "sample_idx": sample_idx.repeat(self.views),
        }
        if self.local_views:
            crops = [self._view(pixels, self.recipe.local, self.local_size,
                                stream(self.seed, epoch, index, v, LOCAL_STREAM), n_global, mine)
                     for v in range(self.local_views)]
            batch["local_image"] = self.normalize(torch.cat(crops))
            batch["local_sample_idx"] = sample_idx.repeat(self.local_views)
        return batch

    @staticmethod
    def _view(pixels: torch.Tensor, spec: AugmentSpec, size: int, gen: torch.Generator, n_global: int,
              mine: torch.Tensor) -> torch.Tensor:
        params = draw_view(spec, n_global, pixels.shape[1], gen)  # the whole global batch's draws, on the CPU
        return apply_view(pixels, spec, params.rows(mine), size)
