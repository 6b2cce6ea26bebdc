"""strategy=fsdp shards a ViT block by block: every block of the student and of the EMA teacher is an FSDP2 unit
of its own, and the encoder root owns only what sits outside the blocks. A real gloo process group of one rank, in a
child process so this test process keeps no process group; the 2-rank resume of a ViT member is in
test_strategy_fsdp_resume.py (mae on vit_tiny)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from orchestra_testkit import REPO, subprocess_env

CHILD = textwrap.dedent("""
    import sys
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    from method_zoo import TeacherStudentWrapper
    from orchestra.model.backbones import SmallCNN
    from orchestra.model.setup import shard
    from orchestra.model.vit import VisionTransformer

    dist.init_process_group("gloo", store=dist.FileStore(sys.argv[1], 1), rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    vit = dict(image_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=3, num_heads=2)
    module = nn.Module()
    module.backbone = TeacherStudentWrapper(VisionTransformer(**vit))
    module.other = SmallCNN(in_channels=1)
    shard(module, mesh, reshard_after_forward=True)
    for net in (module.backbone.student, module.backbone.teacher):
        assert isinstance(net, FSDPModule)
        assert all(isinstance(block, FSDPModule) for block in net.blocks), "a block is not its own unit"
        root_owned = {name for name, _ in net.named_parameters() if not name.startswith("blocks.")}
        assert {"cls_token", "pos_embed"} <= root_owned, root_owned
    assert isinstance(module.other, FSDPModule)
    assert not any(isinstance(m, FSDPModule) for m in module.other.modules() if m is not module.other)
    dist.destroy_process_group()
    print("ok")
""")


def test_vit_blocks_are_fsdp_units_of_their_own(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "store")], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
