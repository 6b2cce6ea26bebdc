"""MAE: deterministic masks, the loss against the paper's formula, the decoder's unshuffle, the forward's contract
and 2-rank DDP == one process. The ViT is a plain-torch stand-in (mae_ddp_worker.StandInViT); orchestra's own
ViT is exercised too when it is importable."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import mae_ddp_worker as workers
from rendezvous_store import hosted_store_env

from method_zoo.errors import MethodError
from method_zoo.losses.mae import MAELoss, patchify
from method_zoo.masking import _mul32, hash32, random_masking
from method_zoo.parts.mae import MAEDecoder, sincos_2d, unshuffle

WORLD = 2


# --- masking ---------------------------------------------------------------------------------------------------

def test_mul32_and_hash32_are_exact_32_bit_arithmetic():
    x = torch.randint(0, 2**32, (1000,), dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    want = [(int(v) * 0x846CA68B) % 2**32 for v in x]
    assert _mul32(x, 0x846CA68B).tolist() == want
    h = hash32(torch.arange(2**16, dtype=torch.int64))
    assert h.unique().numel() == 2**16 and int(h.min()) >= 0 and int(h.max()) < 2**32  # a bijection stays one


def test_masks_are_a_function_of_seed_epoch_and_image():
    idx = torch.tensor([3, 17, 4, 250_000])
    first = random_masking(idx, 49, 0.75, seed=1, epoch=2)
    again = random_masking(idx.clone(), 49, 0.75, seed=1, epoch=2)
    assert torch.equal(first.keep, again.keep) and torch.equal(first.mask, again.mask)
    # Rank slices: half a batch (in any order) gets exactly the full batch's rows for its images.
    half = random_masking(torch.tensor([250_000, 17]), 49, 0.75, seed=1, epoch=2)
    assert torch.equal(half.keep, first.keep[[3, 1]]) and torch.equal(half.mask, first.mask[[3, 1]])
    # The same image twice in a batch gets the same mask.
    twice = random_masking(torch.tensor([17, 17]), 49, 0.75, seed=1, epoch=2)
    assert torch.equal(twice.mask[0], twice.mask[1])
    # Another epoch, another seed: other masks (for every image here).
    for other in (random_masking(idx, 49, 0.75, seed=1, epoch=3), random_masking(idx, 49, 0.75, seed=2, epoch=2)):
        assert (other.mask != first.mask).any(dim=1).all()
    # Different images of one batch differ.
    assert len({tuple(row.tolist()) for row in first.keep}) == 4


@pytest.mark.parametrize(("patches", "ratio", "visible"), [(16, 0.75, 4), (49, 0.75, 12), (196, 0.75, 49),
                                                            (10, 0.5, 5)])
def test_exact_ratio_sorted_keep_and_consistent_mask(patches, ratio, visible):
    keep, mask = random_masking(torch.arange(64), patches, ratio, seed=0, epoch=0)
    assert keep.shape == (64, visible) and mask.shape == (64, patches)
    assert (mask.sum(dim=1) == patches - visible).all()
    assert (keep.diff(dim=1) > 0).all()  # ascending, no repeats
    assert (mask.gather(1, keep) == 0).all()


def test_every_patch_is_masked_about_three_quarters_of_the_time():
    _, mask = random_masking(torch.arange(4000), 16, 0.75, seed=0, epoch=0)
    rate = mask.mean(dim=0)
    assert (rate - 0.75).abs().max() < 0.03  # binomial sd is 0.007 per patch


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.99])
def test_a_ratio_leaving_nothing_to_see_or_predict_is_refused(ratio):
    with pytest.raises(MethodError, match="mask_ratio"):
        random_masking(torch.arange(2), 16, ratio, seed=0, epoch=0)


# --- loss --------------------------------------------------------------------------------------------------------

def reference_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, p: int, norm_pix: bool):
    """The paper's loss written patch by patch: MSE over each masked patch's (normalised) pixels, mean over them."""
    _, _, height, width = images.shape
    cols = width // p
    total, count = 0.0, 0
    for b in range(images.shape[0]):
        for j in range(mask.shape[1]):
            if mask[b, j] == 0:
                continue
            r, c = divmod(j, cols)
            target = images[b, :, r * p:(r + 1) * p, c * p:(c + 1) * p].permute(1, 2, 0).reshape(-1)
            if norm_pix:
                n = target.numel()
                mean = target.sum() / n
                var = ((target - mean) ** 2).sum() / (n - 1)
                target = (target - mean) / torch.sqrt(var + 1e-6)
            total = total + ((pred[b, j] - target) ** 2).sum() / target.numel()
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_the_papers_formula_in_value_and_gradient(norm_pix):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 12, 8, generator=g, dtype=torch.float64)
    pred = torch.randn(3, 6, 4 * 4 * 2, generator=g, dtype=torch.float64, requires_grad=True)
    mask = random_masking(torch.arange(3), 6, 0.5, seed=0, epoch=0).mask.double()
    got = MAELoss(norm_pix)(pred, images, mask, 4)
    (grad_got,) = torch.autograd.grad(got, pred)
    want = reference_loss(pred, images, mask, 4, norm_pix)
    (grad_want,) = torch.autograd.grad(want, pred)
    assert abs(got.item() - want.item()) <= 1e-6
    assert (grad_got - grad_want).abs().max() <= 1e-6


def test_visible_patches_carry_no_loss_and_no_gradient():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)
    mask = random_masking(torch.arange(4), 4, 0.75, seed=0, epoch=0).mask.double()
    pred = torch.randn(4, 4, 48, generator=g, dtype=torch.float64)
    changed = pred + 5.0 * (1 - mask).unsqueeze(-1) * torch.randn(pred.shape, generator=g, dtype=torch.float64)
    results = []
    for p in (pred, changed):
        p = p.clone().requires_grad_()
        loss = MAELoss()(p, images, mask, 4)
        results.append((loss.detach(), torch.autograd.grad(loss, p)[0]))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert (results[0][1][mask == 0] == 0).all() and (results[0][1][mask == 1] != 0).any()


def test_patchify_is_row_major_over_the_grid():
    images = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    patches = patchify(images, 2)
    assert patches.shape == (1, 6, 8)
    assert patches[0, 4].tolist() == images[0, :, 2:4, 2:4].permute(1, 2, 0).reshape(-1).tolist()


# --- decoder -----------------------------------------------------------------------------------------------------

def test_unshuffle_puts_visible_tokens_at_their_patches_and_mask_tokens_elsewhere():
    visible = torch.arange(2 * 2 * 3, dtype=torch.float64).reshape(2, 2, 3).requires_grad_()
    keep = torch.tensor([[1, 4], [0, 3]])
    token = torch.full((3,), -1.0, dtype=torch.float64, requires_grad=True)
    out = unshuffle(visible, keep, token, 5)
    assert out.shape == (2, 5, 3)
    for b in range(2):
        for j in range(5):
            hits = (keep[b] == j).nonzero()
            want = visible[b, hits[0, 0]] if hits.numel() else token
            assert torch.equal(out[b, j], want)
    out.sum().backward()
    assert (visible.grad == 1).all() and (token.grad == 6).all()  # six masked slots use the token


def test_sincos_positions_are_fixed_and_distinct():
    pos = sincos_2d(8, (3, 4))
    assert pos.shape == (12, 8) and torch.cdist(pos, pos).add(torch.eye(12)).min() > 0
    with pytest.raises(MethodError, match="multiple of 4"):
        sincos_2d(6, (2, 2))


def test_decoder_shapes_and_a_non_vit_is_refused_when_built():
    decoder = MAEDecoder(in_dim=16, patch_size=4, channels=2, decoder_dim=8, depth=1, heads=2)
    keep = random_masking(torch.arange(3), 16, 0.75, seed=0, epoch=0).keep
    assert decoder(torch.randn(3, 5, 16), keep, (4, 4)).shape == (3, 16, 32)
    with pytest.raises(MethodError, match=r"mae_forward needs a ViT backbone \(backbone=vit_tiny\)"):
        MAEDecoder(in_dim=16, patch_size=None)


# --- forward -----------------------------------------------------------------------------------------------------

def batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(3)
    return {"image": torch.randn(n, 2, 16, 16, generator=g, dtype=torch.float64), "sample_idx": torch.arange(n),
            "label": torch.arange(n) % 2}


def test_train_forward_encodes_visible_patches_only_and_trains_every_part():
    module = workers.TinyMAE()
    b = batch()
    out = module(b, "train")
    assert set(out) == {"embedding", "label", "loss", "mask"} and torch.isfinite(out["loss"])
    keep = (out["mask"] == 0).nonzero()[:, 1].reshape(4, -1)
    assert keep.shape == (4, 4)
    torch.testing.assert_close(out["embedding"], module.backbone.tokens(b["image"], keep)[:, 0])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_eval_embedding_is_the_full_image_cls():
    module = workers.TinyMAE()
    b = batch()
    out = module({"image": b["image"], "label": b["label"]}, "val")
    assert set(out) == {"embedding", "label"}
    torch.testing.assert_close(out["embedding"], module.backbone(b["image"]))


def test_masks_follow_the_trainers_epoch_and_the_seed():
    module = workers.TinyMAE()
    at = {}
    for epoch in (0, 3):
        module.trainer = SimpleNamespace(current_epoch=epoch, num_training_batches=4, accumulate_grad_batches=1,
                                         global_step=4 * epoch, log_every_n_steps=50)
        at[epoch] = module(batch(), "train")["mask"]
    want = random_masking(torch.arange(4), 16, 0.75, seed=7, epoch=3).mask.double()
    assert torch.equal(at[3], want) and not torch.equal(at[0], at[3])


def test_non_vit_backbones_and_wrong_views_are_refused_in_one_line():
    module = workers.TinyMAE()
    module.backbone = nn.Sequential(nn.Flatten(), nn.LazyLinear(8))
    with pytest.raises(MethodError, match=r"^mae_forward needs a ViT backbone \(backbone=vit_tiny\)[^\n]*$"):
        module(batch(), "val")
    module = workers.TinyMAE()
    two_views = {"image": torch.cat([batch()["image"]] * 2), "sample_idx": torch.arange(4).repeat(2)}
    with pytest.raises(MethodError, match="data.views=1"):
        module(two_views, "train")


def test_with_orchestras_vit_if_present():
    vit_module = pytest.importorskip("orchestra.model.vit")
    module = workers.TinyMAE()
    module.backbone = vit_module.VisionTransformer(image_size=16, patch_size=4, in_chans=2, embed_dim=16, depth=1,
                                                   num_heads=2).double()
    b = batch()
    out = module(b, "train")
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["embedding"].shape == (4, 16)
    assert all(p.grad is not None for p in module.backbone.parameters() if p.requires_grad)
    torch.testing.assert_close(module(b, "val")["embedding"], module.backbone(b["image"]))


# --- DDP ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("mae_ddp")
    with hosted_store_env() as store:
        mp.spawn(workers.worker, args=(WORLD, store.port, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def test_two_gloo_ranks_match_one_process(ranks):
    single = workers.train(rank=0, world=1)
    initial = workers.TinyMAE().state_dict()
    moved = [name for name, value in single.items() if (value - initial[name]).abs().max() > 1e-3]
    assert "decoder.mask_token" in moved and "backbone.proj.weight" in moved, moved
    for name, value in single.items():
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][name], value, rtol=0, atol=1e-9, msg=name)
