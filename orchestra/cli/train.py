"""``orchestra train [key=value ...]``: compose one config and train it in this process."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestra.cli.args import redacted_argv, split
from orchestra.errors import UserError

USAGE = """usage: orchestra train [key=value ...]

Train one run in this process, in a new job directory under output_root/train/.

arguments:
  key=value        Hydra override: group=option (method=byol, data=cifar10) or any config key
                   (trainer.max_epochs=2, optim.lr=1e-3); see orchestra --help for the config groups
options:
  -h, --help       this help
  --               everything after it is an override

for several runs (comma lists, seeds, methods) use: orchestra sweep ... -m
"""


def run(args: list[str]) -> int:
    flags, overrides = split(args)
    if flags - {"--"}:
        raise UserError(f"orchestra train takes no flags (got {' '.join(sorted(flags))}); "
                        f"for several runs use: orchestra sweep ... -m")
    with redacted_argv(overrides):  # wandb records sys.argv while the run trains
        return train(overrides)


def train(overrides: list[str]) -> int:
    from rich.console import Console

    from orchestra.config.compose import compose
    from orchestra.config.validate import check_config, validation_view
    from orchestra.job.body import run_job
    from orchestra.job.outcome import DIVERGED_EXIT_CODE, is_preemption
    from orchestra.jobstate.job_dir import prepare_job_dir, stamp, unique_dir
    from orchestra.jobstate.results import read_results

    cfg = compose(overrides)
    # every bad value at once (the strategy's refusals included), before a job directory or process exists
    check_config(validation_view(cfg))
    job_dir = unique_dir(Path(cfg.output_root) / "train" / f"{stamp()}-{cfg.method_name}")
    prepare_job_dir(job_dir, cfg)
    print(f"job directory: {job_dir}", flush=True)
    if str(cfg.trainer.devices) != "1" or str(cfg.trainer.num_nodes) != "1":
        # Lightning starts the other ranks by re-running this process's command line; a job process makes them join
        # this job directory instead of each composing (and creating) its own.
        import subprocess

        code = subprocess.call([sys.executable, "-m", "orchestra.job", str(job_dir)])
        results = read_results(job_dir / "results.json")
        if code not in (0, DIVERGED_EXIT_CODE):
            _say_how_to_continue(results.get("state"), job_dir)
            return code
    else:
        try:
            results = run_job(job_dir)
        except (SystemExit, KeyboardInterrupt) as stop:
            if isinstance(stop, KeyboardInterrupt) or is_preemption(stop):
                _say_how_to_continue(read_results(job_dir / "results.json").get("state"), job_dir)
            raise
    if results.get("state") == "DIVERGED":
        print(f"{cfg.method_name} DIVERGED: {results.get('error')}  ({job_dir / 'results.json'})", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    metrics = results.get("metrics", {})
    Console().print(f"[bold]{cfg.method_name}[/]: kNN top-1 {metrics.get('knn/top1', float('nan')):.4f}, "
                    f"probe top-1 {metrics.get('probe/top1', float('nan')):.4f}, "
                    f"wall time {results['wall_time_s']:.0f} s  ({job_dir / 'results.json'})")
    return 0


def _say_how_to_continue(state: object, job_dir: Path) -> None:
    if state in ("INTERRUPTED", "PREEMPTED"):
        print(f"{state}: progress is saved in {job_dir}; continue with:  python -m orchestra.job {job_dir}",
              file=sys.stderr, flush=True)
