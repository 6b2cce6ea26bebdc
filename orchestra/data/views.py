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
# Images augmented together on a CPU: a chunk's float views (8 x 3 x 224 x 224 x 4 B = 4.8 MB) stay near the
# cache; fewer rows pay per-call overheads, more stream through memory (bench/augment_candidates.py --profile).
CPU_CHUNK = 8


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
        sample_idx, label = raw["sample_idx"], raw["label"]
        views = [(self.recipe.for_view(v), self.size, stream(self.seed, epoch, index, v)) for v in range(self.views)]
        crops = [(self.recipe.local, self.local_size, stream(self.seed, epoch, index, v, LOCAL_STREAM))
                 for v in range(self.local_views)]
        image, local_image = self._build(raw["raw"], views, crops, n_global, mine)
        batch = {"image": image, "label": label.repeat(self.views), "sample_idx": sample_idx.repeat(self.views)}
        if self.local_views:
            batch["local_image"] = local_image
            batch["local_sample_idx"] = sample_idx.repeat(self.local_views)
        return batch

    def _build(self, raw: torch.Tensor, views: list, crops: list, n_global: int,
               mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised global views and local crops, view-major, built ``chunk_rows`` images at a time.

        Every step works row by row, so a chunk's rows come out exactly as they would in the whole batch. On the CPU
        a chunk keeps the working set of a step (a few MB) in cache instead of streaming a 150 MB tensor through
        memory some twenty times per view; on another device one chunk is the whole batch.
        """
        n, channels = raw.shape[0], raw.shape[1]
        drawn = [(spec, size, draw_view(spec, n_global, channels, gen).rows(mine)) for spec, size, gen in views + crops]
        outputs = [torch.empty(len(group) * n, channels, size, size, device=raw.device)
                   for group, size in ((views, self.size), (crops, self.local_size)) if group]
        step = chunk_rows(n, raw.device)
        for start in range(0, n, step):
            stop = min(n, start + step)
            pixels = raw[start:stop].float().div_(255)  # once per chunk for all its views and crops
            rows = torch.arange(start, stop)
            for v, (spec, size, params) in enumerate(drawn):
                out, place = (outputs[0], v) if v < len(views) else (outputs[-1], v - len(views))
                out[place * n + start:place * n + stop] = self.normalize(apply_view(pixels, spec, params.rows(rows),
                                                                                    size))
        return outputs[0], outputs[1] if crops else None


def chunk_rows(n: int, device: torch.device) -> int:
    """Images per chunk: ``CPU_CHUNK`` on the CPU, all of them on an accelerator (one kernel launch per step)."""
    return CPU_CHUNK if device.type == "cpu" else max(1, n)
