"""I-JEPA: block masks (bounds, disjointness, equal counts, determinism per (seed, epoch, image), rank slices), the
loss against a float64 reference, the forward's contract (no gradient into the EMA target encoder) and 2-rank DDP ==
one process. The ViT is mae_ddp_worker's plain-torch stand-in; orchestra's own ViT is exercised when importable."""

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import ijepa_ddp_worker as workers
from rendezvous_store import hosted_store_env

from method_zoo.block_masking import batch_indices, block_masks, min_counts
from method_zoo.errors import MethodError
from method_zoo.losses.ijepa import IJEPALoss
from method_zoo.parts.ijepa import IJEPAPredictor

WORLD = 2


# --- block masks ------------------------------------------------------------------------------------------------

def rectangles(masks: torch.Tensor, grid: tuple[int, int]) -> set:
    """The (rows, cols) of every ``[..., P]`` mask, asserting that each fills its bounding box (a rectangle)."""
    cells = masks.reshape(-1, *grid)
    rows, cols = cells.any(dim=2).sum(dim=1), cells.any(dim=1).sum(dim=1)
    assert torch.equal(cells.sum(dim=(1, 2)), rows * cols), "not a filled rectangle"
    # a filled bounding box: the set rows and columns are contiguous
    for lines in (cells.any(dim=2), cells.any(dim=1)):
        first = lines.int().argmax(dim=1)
        assert (lines.sum(dim=1) == lines.int().cumsum(dim=1).gather(1, (first + lines.sum(dim=1) - 1).view(-1, 1))
                .view(-1)).all()
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def allowed_sides(scale: tuple[float, float], aspect: tuple[float, float], grid: tuple[int, int]) -> set:
    """Every (rows, cols) the released rounding can give for scale/aspect in the ranges (a fine sweep)."""
    sides = set()
    for s in torch.linspace(scale[0], scale[1], 60).tolist():
        for a in torch.exp(torch.linspace(math.log(aspect[0]), math.log(aspect[1]), 60)).tolist():
            area = s * grid[0] * grid[1]
            sides.add((min(max(round(math.sqrt(area * a)), 1), max(grid[0] - 1, 1)),
                       min(max(round(math.sqrt(area / a)), 1), max(grid[1] - 1, 1))))
    return sides


@pytest.mark.parametrize("grid", [(4, 4), (14, 14), (6, 9)])
def test_blocks_are_rectangles_within_the_scale_and_aspect_bounds(grid):
    masks = block_masks(torch.arange(300), grid, seed=0, epoch=0)
    target_sides = allowed_sides((0.15, 0.2), (0.75, 1.5), grid)
    assert rectangles(masks.targets, grid) <= target_sides
    assert masks.context.any(dim=1).all() and not (masks.context & masks.targets.any(dim=1)).any()
    if grid == (14, 14):  # the paper's grid: context blocks of 13x13 (the release keeps blocks inside the grid)
        sides = allowed_sides((0.85, 1.0), (1.0, 1.0), grid)
        assert sides == {(13, 13)}
        covered = masks.context | masks.targets.any(dim=1)
        assert (covered.sum(dim=1) >= 13 * 13 * 0.5).all()


def test_every_position_and_size_of_target_is_drawn_over_many_images():
    masks = block_masks(torch.arange(4000), (14, 14), seed=0, epoch=0)
    assert masks.targets.float().mean(dim=(0, 1)).min() > 0.005  # corners too (uniform top-left: rarer)
    assert rectangles(masks.targets, (14, 14)) == allowed_sides((0.15, 0.2), (0.75, 1.5), (14, 14))


def test_masks_are_a_function_of_seed_epoch_and_image_and_rank_slices_match():
    idx = torch.tensor([3, 17, 4, 250_000])
    first = block_masks(idx, (4, 4), seed=1, epoch=2)
    again = block_masks(idx.clone(), (4, 4), seed=1, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    half = block_masks(torch.tensor([250_000, 17]), (4, 4), seed=1, epoch=2)  # a rank's slice, in any order
    assert torch.equal(half.context, first.context[[3, 1]]) and torch.equal(half.targets, first.targets[[3, 1]])
    for other in (block_masks(idx, (4, 4), seed=1, epoch=3), block_masks(idx, (4, 4), seed=2, epoch=2)):
        assert (other.targets != first.targets).flatten(1).any(dim=1).all()


def test_batch_indices_have_equal_counts_taken_as_the_batch_minimum():
    masks = block_masks(torch.arange(64), (4, 4), seed=0, epoch=0)
    counts = min_counts(masks)
    context, targets = batch_indices(masks, counts)
    assert context.shape == (64, int(masks.context.sum(dim=1).min()))
    assert targets.shape == (64, 4, int(masks.targets.sum(dim=2).min()))
    assert (context.diff(dim=1) > 0).all() and (targets.diff(dim=2) > 0).all()  # ascending, no repeats
    assert masks.context.gather(1, context).all() and masks.targets.gather(2, targets).all()
    assert not (context.unsqueeze(1).unsqueeze(-1) == targets.unsqueeze(-2)).any()  # still disjoint


def test_a_grid_too_small_for_any_context_is_refused():
    with pytest.raises(MethodError, match="context patches"):
        block_masks(torch.arange(4), (2, 2), seed=0, epoch=0, min_context=4)


# --- loss --------------------------------------------------------------------------------------------------------

def reference_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 1 patch by patch: the squared L2 distance per target patch over D, averaged over patches and blocks."""
    b, m, k, d = pred.shape
    total = 0.0
    for i in range(b):
        for j in range(m):
            for p in range(k):
                total = total + ((pred[i, j, p] - target[i, j, p]) ** 2).sum() / d
    return total / (b * m * k)


def test_loss_matches_the_papers_formula_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64)
    got, want = IJEPALoss()(pred, target), reference_loss(pred, target)
    assert abs(got.item() - want.item()) <= 1e-6
    assert (torch.autograd.grad(got, pred)[0] - torch.autograd.grad(want, pred)[0]).abs().max() <= 1e-6
    smooth = IJEPALoss("smooth_l1")(pred, target)
    torch.testing.assert_close(smooth, F.smooth_l1_loss(pred, target))
    with pytest.raises(MethodError, match="distance"):
        IJEPALoss("cosine")


# --- forward -----------------------------------------------------------------------------------------------------

def batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"image": torch.randn(n, 2, 16, 16, generator=g, dtype=torch.float64), "sample_idx": torch.arange(n),
            "label": torch.arange(n) % 2}


def test_targets_are_the_layer_normed_teacher_on_the_full_image_and_only_the_student_learns():
    module = workers.TinyIJEPA()
    with torch.no_grad():  # make the teacher differ from the student, so which one runs is visible
        for p in module.backbone.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    b = batch()
    out = module(b, "train")
    assert set(out) == {"embedding", "label", "loss"} and torch.isfinite(out["loss"])
    masks = block_masks(b["sample_idx"], (4, 4), seed=7, epoch=0)
    context, targets = batch_indices(masks, min_counts(masks))
    vit = module.backbone.student
    torch.testing.assert_close(out["embedding"], vit.tokens(b["image"], context)[:, 0])
    full = module.backbone.teacher.tokens(b["image"])[:, 1:]
    full = F.layer_norm(full, (full.shape[-1],))
    want_target = torch.stack([full[i, targets[i]] for i in range(4)])
    pred = module.predictor(vit.tokens(b["image"], context)[:, 1:], context, targets, vit.pos)
    torch.testing.assert_close(out["loss"], reference_loss(pred, want_target))
    out["loss"].backward()
    assert all(p.grad is None for p in module.backbone.teacher.parameters())
    trained = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is not None and p.grad.any()]
    assert {n for n, p in module.named_parameters() if p.requires_grad} - set(trained) <= {"backbone.student.pos"}


def test_eval_embedding_is_the_online_full_image_cls():
    module = workers.TinyIJEPA()
    b = batch()
    out = module({"image": b["image"], "label": b["label"]}, "val")
    assert set(out) == {"embedding", "label"}
    torch.testing.assert_close(out["embedding"], module.backbone.student(b["image"]))


def test_masks_follow_the_trainers_epoch():
    module = workers.TinyIJEPA()
    losses = {}
    for epoch in (0, 3):
        module.trainer = SimpleNamespace(current_epoch=epoch, num_training_batches=4, accumulate_grad_batches=1,
                                         global_step=4 * epoch, log_every_n_steps=50)
        losses[epoch] = module(batch(), "train")["loss"].item()
    assert losses[0] != losses[3]


def test_non_vit_backbones_and_wrong_views_are_refused_in_one_line():
    module = workers.TinyIJEPA()
    module.backbone = workers.TeacherStudentWrapper(nn.Sequential(nn.Flatten(), nn.Linear(512, 8)))
    with pytest.raises(MethodError, match=r"^ijepa_forward needs a ViT backbone[^\n]*$"):
        module(batch(), "val")
    module = workers.TinyIJEPA()
    two_views = {"image": torch.cat([batch()["image"]] * 2), "sample_idx": torch.arange(4).repeat(2)}
    with pytest.raises(MethodError, match="data.views=1"):
        module(two_views, "train")


def test_with_orchestras_vit_if_present():
    vit_module = pytest.importorskip("orchestra.model.vit")
    module = workers.TinyIJEPA()
    vit = vit_module.VisionTransformer(image_size=16, patch_size=4, in_chans=2, embed_dim=16, depth=1, num_heads=2)
    module.backbone = workers.TeacherStudentWrapper(vit.double())
    out = module(batch(), "train")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["embedding"].shape == (4, 16)
    assert module.backbone.student.patch_embed.weight.grad is not None


def test_predictor_width_must_split_into_heads():
    with pytest.raises(MethodError, match="pred_heads"):
        IJEPAPredictor(16, pred_dim=10, heads=4)


# --- DDP ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ijepa_ddp")
    with hosted_store_env() as store:
        mp.spawn(workers.worker, args=(WORLD, store.port, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def test_two_gloo_ranks_match_one_process(ranks):
    single = workers.train(rank=0, world=1)
    initial = workers.TinyIJEPA().state_dict()
    moved = [name for name, value in single.items() if (value - initial[name]).abs().max() > 1e-4]
    assert "predictor.mask_token" in moved and "backbone.student.proj.weight" in moved, moved
    assert "backbone.teacher.proj.weight" in moved, moved  # the EMA stepped too
    for name, value in single.items():
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][name], value, rtol=0, atol=1e-9, msg=name)
