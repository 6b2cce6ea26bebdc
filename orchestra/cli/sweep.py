"""``orchestra sweep [key=a,b,c ...] -m``: one member per combination of the comma lists, locally or on SLURM."""

from __future__ import annotations

from orchestra.cli.args import redacted_argv, report_at_end, split
from orchestra.errors import UserError

USAGE = """usage: orchestra sweep [key=a,b,c ...] -m [--dry-run] [--wait]

One run (member) per combination of the comma lists, each in its own job directory under
output_root/sweeps/<time>/; the manifest is sweep.json there. Locally the command returns when every member has
ended, with a comparison table; with launcher=slurm it returns once the job array is queued.

With search=optuna the sweep is a search instead: search.parallel workers ask an Optuna study (study.journal in the
sweep directory) for search.trials trials, each in trials/NNNN/, and a pruner stops bad ones early (PRUNED).

arguments:
  key=a,b,c        Hydra overrides; a comma list is swept (method=simclr,byol seed=0,1)
  key=interval(a,b), tag(log, interval(a,b)), choice(a,b), range(a,b,s)
                   with search=optuna: what the study searches (a comma list is then a choice too)
options:
  -m, --multirun   required: expand the comma lists (Hydra multirun)
  --dry-run        print the members, their job directories (and the sbatch script); run nothing
  --wait           with launcher=slurm: follow the sweep with a live table until it ends
  -h, --help       this help

examples:
  orchestra sweep method=simclr,byol,vicreg -m
  orchestra sweep method=simclr seed=0,1,2 optim.lr=0.001,0.002 -m --dry-run
  orchestra sweep method=simclr,byol launcher=slurm launcher.partition=gpu -m
  orchestra sweep 'optim.lr=tag(log, interval(1e-4, 1e-1))' search=optuna search.trials=32 search.parallel=8 -m
"""

FLAGS = {"-m", "--multirun", "--dry-run", "--wait"}


def run(args: list[str]) -> int:
    flags, overrides = split(args)
    unknown = flags - FLAGS
    if unknown:
        raise UserError(f"unknown flag {' '.join(sorted(unknown))}; sweep takes -m, --dry-run and --wait")
    if not flags & {"-m", "--multirun"}:
        raise UserError("orchestra sweep needs -m (Hydra multirun), e.g. orchestra sweep method=simclr,byol -m")
    from orchestra.sweep.create import sweep

    if "--wait" in flags:
        overrides.append("launcher.wait=true")
    with redacted_argv(overrides):  # as for train: whatever records this process's sys.argv sees no secret
        return sweep(overrides, dry_run="--dry-run" in flags, on_end=report_at_end)
