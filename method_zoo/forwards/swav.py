"""SwAV (Caron et al., 2020): swap the views' cluster assignments, computed online by Sinkhorn-Knopp over prototypes."""

from typing import Any

import torch
from torch import Tensor, nn

from method_zoo.forwards.common import embed, multi_crop_views, split_crops
from method_zoo.requirements import require_attributes
from method_zoo.views import split_views

METHOD = "swav_forward"
QUEUE_KEY = "swav_queue"
GLOBAL_VIEWS = 2  # the paper assigns codes from its two high-resolution crops


def queued_projections(module: nn.Module, epoch: int) -> Tensor | None:
    """The queue's past projections once it is in use: from ``module.swav_queue_start_epoch`` on and once full.

    A partly filled queue would hold zero rows or too few samples to matter; the paper waits until it is full.
    """
    queues = getattr(module, "queues", None)
    if queues is None or QUEUE_KEY not in queues or epoch < int(getattr(module, "swav_queue_start_epoch", 0)):
        return None
    queue = queues[QUEUE_KEY]
    return queue.contents() if int(queue.filled) == queue.data.shape[0] > 0 else None


def swav_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for SwAV, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector``, ``prototypes`` (:class:`SwAVPrototypes`), ``swav_loss``
    (:class:`SwAVLoss`); optional ``queues['swav_queue']`` (an OnlineQueue of width the projection's) used from epoch
    ``swav_queue_start_epoch``. The epoch is the Module's ``current_epoch`` (0 when it has none).
    Batch at train: the two global views in ``image``/``sample_idx`` and the local crops in
    ``local_image``/``local_sample_idx``. Returns ``embedding`` (global views), ``label`` when given, and at train
    ``loss`` plus ``swav_queue``: the global views' detached projections, image by image, for the queue to store.
    """
    require_attributes(self, ("backbone", "projector", "prototypes", "swav_loss"), METHOD)
    if stage != "train":
        return embed(self, batch, METHOD, stage)
    crops = multi_crop_views(batch, METHOD)
    out = embed(self, batch, METHOD, stage)
    n_global_rows = out["embedding"].shape[0]
    # One backbone call per resolution, one projector call over all crops (its BatchNorm sees every crop, as in
    # the paper's code).
    z = self.projector(torch.cat([out["embedding"], self.backbone(crops.local_images)]))
    epoch = int(getattr(self, "current_epoch", 0))
    if not self.prototypes.frozen(epoch):
        self.prototypes.normalize_()  # the last step moved them off the sphere; frozen ones never move
    scores = self.prototypes(z, epoch)
    global_scores, local_scores = split_crops(scores[:n_global_rows], scores[n_global_rows:], batch, GLOBAL_VIEWS,
                                              METHOD)
    global_z = split_views(z[:n_global_rows], crops.global_sample_idx, GLOBAL_VIEWS, METHOD)
    queued = queued_projections(self, epoch)
    shared = None
    if queued is not None:
        with torch.no_grad():
            shared = self.prototypes(queued.to(z.dtype), epoch).detach()
    out["loss"] = self.swav_loss([*global_scores, *local_scores], GLOBAL_VIEWS, [shared] * GLOBAL_VIEWS)
    # Image-major rows (image 0's views, image 1's, ...): gathered over ranks they are in single-process order.
    out[QUEUE_KEY] = torch.stack(global_z, dim=1).flatten(0, 1).detach()
    return out
