"""The ``orchestra`` command: train one run, or sweep many, from Hydra overrides.

Only ``train`` and the job processes import torch; ``--help`` and sweep bookkeeping stay light.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestra.errors import UserError

USAGE = """usage: orchestra COMMAND [OVERRIDES...]

commands:
  train  [key=value ...]            train one run in this process
  sweep  [key=a,b,c ...] -m         one run per combination of the comma lists (Hydra multirun)
         [--dry-run]                print the members, their job directories (and sbatch script); run nothing
         [--wait]                   with launcher=slurm: follow the sweep with a live table until it ends
  status [SWEEP_DIR]                state of every member (latest sweep by default), log tail of failures
  resume SWEEP_DIR                  re-run the members that did not complete, from their last.ckpt
  cancel SWEEP_DIR                  cancel the members still queued or running
  sync   SWEEP_DIR [--dry-run]      upload the members' offline wandb runs (needs `wandb login`)
  report [SWEEP_DIR] [--wandb]      comparison table (mean ± std over seeds), report.md/.html, results.csv, plots
                                    in the sweep dir; --wandb also publishes it as a wandb Report (needs a server)
  eval   SWEEP_DIR|JOB_DIR          offline linear evaluation of frozen backbones; adds linear_top1 to results
  cluster up|down|status            a single-node development SLURM cluster on this machine

examples:
  orchestra train method=byol trainer.max_epochs=2
  orchestra sweep method=simclr,byol,vicreg -m
  orchestra sweep method=simclr seed=0,1,2 optim.lr=0.001,0.002 -m
  orchestra sweep method=simclr,byol,vicreg launcher=slurm launcher.partition=gpu -m
"""


def _help() -> str:
    from orchestra.config.compose import GROUPS, group_options

    lines = [USAGE, "config groups (choose with group=option):"]
    for group in GROUPS:
        lines.append(f"  {group:<9} {', '.join(group_options(group))}")
    lines.append("\nany other key of the config can be set with key=value (see conf/config.yaml).")
    return "\n".join(lines)


def train(overrides: list[str]) -> int:
    from rich.console import Console

    from orchestra.config.compose import compose
    from orchestra.job.body import run_job
    from orchestra.sweep.create import prepare_job_dir, stamp, unique_dir

    cfg = compose(overrides)
    from orchestra.distributed.strategies import check_strategy

    check_strategy(cfg.get("strategy"), cfg.trainer)  # e.g. DeepSpeed on CPU: one line before any process starts
    job_dir = unique_dir(Path(cfg.output_root) / "train" / f"{stamp()}-{cfg.method_name}")
    prepare_job_dir(job_dir, cfg)
    print(f"job directory: {job_dir}", flush=True)
    if str(cfg.trainer.devices) != "1" or str(cfg.trainer.num_nodes) != "1":
        # Lightning starts the other ranks by re-running this process's command line; a job process makes them join
        # this job directory instead of each composing (and creating) its own.
        import subprocess

        from orchestra.job.results import read_results

        code = subprocess.call([sys.executable, "-m", "orchestra.job", str(job_dir)])
        if code != 0:
            return code
        results = read_results(job_dir / "results.json")
    else:
        results = run_job(job_dir)
    metrics = results.get("metrics", {})
    Console().print(f"[bold]{cfg.method_name}[/]: kNN top-1 {metrics.get('knn/top1', float('nan')):.4f}, "
                    f"probe top-1 {metrics.get('probe/top1', float('nan')):.4f}, "
                    f"wall time {results['wall_time_s']:.0f} s  ({job_dir / 'results.json'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None and args[:1] in (["train"], ["sweep"]):  # wandb records sys.argv in its run metadata; our own
        # parsing uses `args` from here on. Only these take overrides; the others stay free of the omegaconf import.
        from orchestra.config.compose import redact_overrides

        sys.argv[1:] = redact_overrides(args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_help())
        return 0
    command, rest = args[0], args[1:]
    flags = {a for a in rest if a.startswith("-")}
    overrides = [a for a in rest if not a.startswith("-")]
    try:
        if command == "train":
            if flags - {"--"}:
                raise UserError(f"orchestra train takes no flags (got {' '.join(sorted(flags))}); "
                                f"for several runs use: orchestra sweep ... -m")
            return train(overrides)
        if command == "sweep":
            unknown = flags - {"-m", "--multirun", "--dry-run", "--wait"}
            if unknown:
                raise UserError(f"unknown flag {' '.join(sorted(unknown))}; sweep takes -m, --dry-run and --wait")
            if not flags & {"-m", "--multirun"}:
                raise UserError("orchestra sweep needs -m (Hydra multirun), e.g. orchestra sweep method=simclr,byol -m")
            from orchestra.sweep.create import sweep

            if "--wait" in flags:
                overrides.append("launcher.wait=true")
            return sweep(overrides, dry_run="--dry-run" in flags)
        if command in ("status", "resume", "cancel"):
            from orchestra.sweep import control as sweep_status

            if len(overrides) > 1 or flags:
                raise UserError(f"usage: orchestra {command} [SWEEP_DIR]")
            return getattr(sweep_status, command)(overrides[0] if overrides else None)
        if command == "report":
            from orchestra.cli.report import report_command

            if len(overrides) > 1 or flags - {"--wandb"}:
                raise UserError("usage: orchestra report [SWEEP_DIR] [--wandb]")
            return report_command(overrides[0] if overrides else None, wandb="--wandb" in flags)
        if command == "eval":
            from orchestra.cli.eval import eval_command

            if len(overrides) != 1 or flags:
                raise UserError("usage: orchestra eval SWEEP_DIR|JOB_DIR (a sweep directory or one member's)")
            return eval_command(overrides[0])
        if command == "sync":
            from orchestra.tracking.wandb_sync import sync

            if len(overrides) != 1 or flags - {"--dry-run"}:
                raise UserError("usage: orchestra sync SWEEP_DIR [--dry-run]")
            return sync(overrides[0], dry_run="--dry-run" in flags)
        if command == "cluster":
            from launch.cluster.cli import main as cluster_main

            return cluster_main(rest)
        raise UserError(f"unknown command '{command}'; commands: train, sweep, status, resume, cancel, report, eval, "
                        f"sync, cluster (see orchestra --help)")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `orchestra ... | head`: the reader left; no traceback, and none at exit either
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        from method_zoo import MethodError

        if isinstance(err, MethodError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
