"""Other libraries' private APIs are used only in ``*_compat.py`` modules (one per library).

Scans the source of orchestra/, launch/ and method_zoo/: outside a compat module no import may name a private module
or name of hydra, omegaconf, lightning, deepspeed, submitit or wandb, and none of the private names we know we rely
on (below) may be touched, as an attribute or a getattr string.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestra", "launch", "method_zoo")
LIBRARIES = {"hydra", "omegaconf", "lightning", "pytorch_lightning", "lightning_fabric", "deepspeed", "submitit",
             "wandb", "wandb_workspaces"}
# The private names orchestra relies on (each has its function in a compat module), read as attributes.
PRIVATE_ATTRIBUTES = {
    "_apply_overrides_to_config",  # hydra
    "_get_node", "_is_interpolation", "_is_missing", "OmegaConfDumper",  # omegaconf
    "_init_deepspeed_distributed", "_wandb_init", "_experiment", "_trainer",  # lightning
    "_make_sbatch_string", "_submitit_command_str",  # submitit
}


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


def _violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in LIBRARIES and _private(alias.name):
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in LIBRARIES:
                continue
            if _private(node.module):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            found += [f"{where}:{node.lineno}: from {node.module} import {alias.name}" for alias in node.names
                      if _private(alias.name) or alias.name in PRIVATE_ATTRIBUTES]
        elif isinstance(node, ast.Attribute):
            text = ast.unparse(node)
            if node.attr in PRIVATE_ATTRIBUTES:
                found.append(f"{where}:{node.lineno}: {text}")
            elif text in ("omegaconf.base.parse", "DDPStrategy.setup_environment"):  # a global patch; past the MRO
                found.append(f"{where}:{node.lineno}: {text}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2 and \
                isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE_ATTRIBUTES:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_private_apis_of_other_libraries_live_only_in_compat_modules():
    sources = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
               if not path.name.endswith("_compat.py")]
    assert sources, "no sources found to scan"
    found = [line for path in sources
             for line in sorted(set(_violations(path.read_text(), str(path.relative_to(ROOT)))),
                                key=lambda text: int(text.split(":")[1]))]
    assert not found, ("private API of another library outside a <library>_compat.py module (move it into "
                       "orchestra/compat/ or launch/submitit_compat.py):\n  " + "\n  ".join(found))


def test_the_scan_sees_each_kind_of_use():
    """The scan itself: every shape of use it guards against is reported, and nothing else."""
    samples = {
        "import hydra._internal.utils": 1,
        "from hydra._internal.config_loader_impl import ConfigLoaderImpl": 1,
        "from omegaconf._utils import OmegaConfDumper": 2,  # the private module, and the listed name
        "from submitit.slurm.slurm import _make_sbatch_string": 1,
        "x = cfg._get_node('a')._value()": 1,
        "omegaconf.base.parse = cached": 1,
        "DDPStrategy.setup_environment(self)": 1,
        "run = self._experiment": 1,
        "t = getattr(module, '_trainer', None)": 1,
        "from hydra.errors import HydraException\nimport torch._dynamo\nself._mine = 1": 0,
    }
    for source, expected in samples.items():
        got = _violations(source, "sample.py")
        assert len(got) == expected, (source, got)
