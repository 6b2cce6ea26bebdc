"""A trivial Hydra app for bench/dispatch.py: the same 100-member sweep dispatched by hydra-submitit-launcher.

    python bench/hydra_app.py -m seed='range(0,100)' hydra/launcher=submitit_slurm hydra.launcher.partition=debug
"""

from __future__ import annotations

import hydra
from hydra.core.config_store import ConfigStore

ConfigStore.instance().store(name="bench_app", node={"seed": 0})


@hydra.main(version_base=None, config_name="bench_app")
def main(cfg) -> int:
    return int(cfg.seed)  # no work: only dispatch is measured


if __name__ == "__main__":
    main()
