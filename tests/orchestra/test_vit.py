"""The ViT backbone: its token interface (what masked methods call), positional interpolation, and training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from orchestra_testkit import read_json, tiny_overrides, train_in_process

from orchestra.model.vit import VisionTransformer

CONF = Path(__file__).resolve().parents[2] / "conf"


def _vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    settings = dict(image_size=28, patch_size=7, in_chans=1, embed_dim=48, depth=2, num_heads=3) | kwargs
    return VisionTransformer(**settings).eval()


def _images(batch: int = 3, size: int = 28, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


def test_shapes_and_cls_embedding():
    vit, x = _vit(), _images()
    assert vit.patch_size == 7 and vit.embed_dim == 48 and vit.grid(x) == (4, 4)
    assert isinstance(vit.blocks, torch.nn.ModuleList) and len(vit.blocks) == 2
    assert vit.patch_embed_tokens(x).shape == (3, 16, 48)
    tokens = vit.tokens(x)
    assert tokens.shape == (3, 17, 48)
    embedding = vit(x)
    assert embedding.shape == (3, 48)
    torch.testing.assert_close(embedding, tokens[:, 0], rtol=0, atol=0)
    # Final LayerNorm (weight 1, bias 0 at init): each token has mean ~0 and variance ~1 over its features.
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(3, 17), rtol=0, atol=1e-5)


def test_tokens_of_a_patch_subset_equal_the_blocks_run_by_hand():
    vit, x = _vit(), _images()
    keep = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i))[:5] for i in range(3)])
    # By hand: [CLS] + the kept rows of patch_embed_tokens (positional embeddings already added), blocks, norm.
    patches = vit.patch_embed_tokens(x)
    kept = torch.stack([patches[b, keep[b]] for b in range(3)])
    sequence = torch.cat([vit.cls_token.expand(3, -1, -1), kept], dim=1)
    for block in vit.blocks:
        sequence = block(sequence)
    expected = vit.norm(sequence)

    subset = vit.tokens(x, keep)
    assert subset.shape == (3, 6, 48)
    torch.testing.assert_close(subset, expected)
    # Attention over fewer tokens really changes the result (otherwise the comparison above would prove little).
    assert not torch.allclose(subset[:, 0], vit.tokens(x)[:, 0], atol=1e-4)


def test_keeping_every_patch_equals_keep_none_and_order_follows_keep():
    vit, x = _vit(), _images()
    everything = torch.arange(16).expand(3, -1)
    torch.testing.assert_close(vit.tokens(x, everything), vit.tokens(x), rtol=0, atol=0)
    # Without positional bias in attention, permuting the kept patches permutes their outputs and leaves CLS alone.
    reversed_keep = everything.flip(1)
    flipped = vit.tokens(x, reversed_keep)
    torch.testing.assert_close(flipped[:, 1:], vit.tokens(x)[:, 1:].flip(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flipped[:, 0], vit(x), atol=1e-5, rtol=1e-5)


def test_patch_tokens_are_row_major_with_the_base_positional_embeddings():
    vit, x = _vit(), _images()
    # At the base resolution the interpolation is the identity: the learned table itself is used.
    assert vit.positional_embedding((4, 4)) is vit.pos_embed
    tokens = vit.patch_embed_tokens(x)
    # Patch (row 1, col 2) is pixels [7:14, 14:21]; row-major index 1 * 4 + 2 = 6.
    weight, bias = vit.patch_embed.weight, vit.patch_embed.bias
    by_hand = (x[:, :, 7:14, 14:21].reshape(3, -1) @ weight.reshape(48, -1).T) + bias + vit.pos_embed[0, 6]
    torch.testing.assert_close(tokens[:, 6], by_hand)


def test_other_resolutions_interpolate_the_positional_embeddings():
    vit = _vit()
    small = _images(size=14)  # DINO's local crops of the 28 px digits
    assert vit.grid(small) == (2, 2)
    assert vit(small).shape == (3, 48) and torch.isfinite(vit(small)).all()
    assert vit.tokens(_images(size=42)).shape == (3, 1 + 36, 48)
    with torch.no_grad():
        # A table that is a smooth ramp along the columns stays a ramp (increasing, within range) when resized.
        ramp = torch.linspace(-1, 1, 4).repeat(4)[:, None].expand(-1, 48)
        vit.pos_embed.copy_(ramp[None])
        resized = vit.positional_embedding((2, 8))[0, :, 0].reshape(2, 8)
    assert resized.shape == (2, 8)
    assert (resized[:, 1:] > resized[:, :-1]).all()
    torch.testing.assert_close(resized[0], resized[1])  # constant along the rows, as the table was
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit(_images(size=30))


def test_gradients_reach_every_parameter():
    vit = _vit().train()
    keep = torch.arange(0, 16, 2).expand(3, -1)
    (vit(_images()).square().sum() + vit.tokens(_images(), keep)[:, 1:].sum()).backward()
    missing = [name for name, p in vit.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_init():
    vit = _vit()
    assert vit.norm.weight.eq(1).all() and vit.norm.bias.eq(0).all()
    qkv = vit.blocks[0].attn.qkv.weight
    assert qkv.abs().max() <= 0.04 + 1e-6 and 0.015 < qkv.std() < 0.025  # truncated at 2 std
    assert vit.blocks[0].attn.qkv.bias.eq(0).all()
    assert 0.015 < vit.pos_embed.std() < 0.025


def _compose(backbone: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=[f"backbone={backbone}", *overrides])


@pytest.mark.parametrize(("backbone", "millions"), [("vit_small", 22.0), ("vit_base", 86.0)])
def test_imagenet_sized_configs_compose_and_build(backbone, millions):
    cfg = _compose(backbone, "data=imagefolder", "data.root=/nonexistent", "data.num_classes=10")
    assert cfg.backbone.image_size == 224 and cfg.backbone.in_chans == 3 and cfg.backbone.patch_size == 16
    with torch.device("meta"):  # shapes only: no memory or init time for 86M parameters
        vit = instantiate(cfg.backbone)
    assert isinstance(vit, VisionTransformer) and vit.embed_dim == cfg.embedding_dim
    count = sum(p.numel() for p in vit.parameters()) / 1e6
    assert abs(count - millions) < 0.05 * millions, count


def test_tiny_config_follows_the_data():
    cfg = _compose("vit_tiny")
    assert cfg.backbone.image_size == 28 and cfg.backbone.in_chans == 1
    assert cfg.embedding_dim == cfg.backbone.embed_dim
    vit = instantiate(cfg.backbone)
    assert vit(_images(2)).shape == (2, cfg.embedding_dim)


@pytest.mark.parametrize("method", ["simclr", "dino"])
def test_one_epoch_with_vit_tiny(tmp_path, method):
    job_dir = train_in_process(tiny_overrides(tmp_path, method, "backbone=vit_tiny"))
    results = read_json(job_dir / "results.json")
    assert results["state"] == "COMPLETED", results.get("error")
    metrics = results["metrics"]
    assert math.isfinite(metrics["train/loss"])
    assert 0.0 <= metrics["knn/top1"] <= 1.0 and 0.0 <= metrics["probe/top1"] <= 1.0
    config = OmegaConf.load(job_dir / "config.yaml")
    assert config.backbone._target_ == "orchestra.model.vit.VisionTransformer"
    if method == "dino":  # the local crops went through the ViT at 14 px, a 2x2 grid of the base 4x4
        assert config.data.local_views > 0 and config.data.local_size == 14


def test_bf16_weights_run_at_the_base_and_other_resolutions():
    """trainer.precision=bf16-true gives bf16 weights and images; the resized positional table must come back in bf16
    (it is interpolated in float32) or the addition to the bf16 patch tokens would promote them to float32."""
    vit = _vit().to(torch.bfloat16)
    for size in (28, 14):
        tokens = vit.patch_embed_tokens(_images(size=size).to(torch.bfloat16))
        assert tokens.dtype == torch.bfloat16
        embedding = vit(_images(size=size).to(torch.bfloat16))
        assert embedding.dtype == torch.bfloat16 and torch.isfinite(embedding.float()).all()
