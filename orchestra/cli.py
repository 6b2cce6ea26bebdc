"""The ``orchestra`` command: train one run, or sweep many, from Hydra overrides.

Only ``train`` and the job processes import torch; ``--help`` and sweep bookkeeping stay light.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

from orchestra.errors import UserError

USAGE = """usage: orchestra COMMAND [OVERRIDES...]

commands:
  train  [key=value ...]            train one run in this process
  sweep  [key=a,b,c ...] -m         one run per combination of the comma lists (Hydra multirun)
         [--dry-run]                print the members and their job directories; run nothing

examples:
  orchestra train method=byol trainer.max_epochs=2
  orchestra sweep method=simclr,byol,vicreg -m
  orchestra sweep method=simclr seed=0,1,2 optim.lr=0.001,0.002 -m
"""


def _help() -> str:
    from orchestra.config import GROUPS, group_options

    lines = [USAGE, "config groups (choose with group=option):"]
    for group in GROUPS:
        lines.append(f"  {group:<9} {', '.join(group_options(group))}")
    lines.append("\nany other key of the config can be set with key=value (see conf/config.yaml).")
    return "\n".join(lines)


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _unique_dir(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _prepare_job_dir(job_dir: Path, cfg) -> None:
    from orchestra.config import to_yaml

    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {job_dir} ({err.strerror}); set output_root=<a writable folder>") from None
    cfg.job_dir = str(job_dir.resolve())
    (job_dir / "config.yaml").write_text(to_yaml(cfg))


def train(overrides: list[str]) -> int:
    from rich.console import Console

    from orchestra.config import compose
    from orchestra.job import run_job

    cfg = compose(overrides)
    job_dir = _unique_dir(Path(cfg.output_root) / "train" / f"{_stamp()}-{cfg.method_name}")
    _prepare_job_dir(job_dir, cfg)
    print(f"job directory: {job_dir}", flush=True)
    results = run_job(job_dir)
    metrics = results.get("metrics", {})
    Console().print(f"[bold]{cfg.method_name}[/]: kNN top-1 {metrics.get('knn/top1', float('nan')):.4f}, "
                    f"probe top-1 {metrics.get('probe/top1', float('nan')):.4f}, "
                    f"wall time {results['wall_time_s']:.0f} s  ({job_dir / 'results.json'})")
    return 0


def _member_name(index: int, member: list[str], swept: list[str]) -> str:
    values = dict(o.split("=", 1) for o in member if "=" in o)
    label = "_".join(f"{k}={values[k]}" for k in swept if k in values)
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9_.=-]+", "-", label)[:80] if label else f"{index:03d}"


def sweep(overrides: list[str], dry_run: bool) -> int:
    import sys as _sys

    from launch import local, manifest
    from orchestra.config import SECRET_KEY, compose, expand, redact_overrides
    from orchestra.report import print_report

    members = expand(overrides)
    configs = [compose(member) for member in members]  # every member is validated before anything runs
    members = [redact_overrides(m) for m in members]  # secrets never reach the manifest, dir names or terminal
    values = [dict(o.split("=", 1) for o in m if "=" in o) for m in members]
    keys = list(dict.fromkeys(k for v in values for k in v if not SECRET_KEY.search(k)))
    swept = [k for k in keys if len({v.get(k) for v in values}) > 1] or keys[:1]
    sweep_dir = _unique_dir(Path(configs[0].output_root) / "sweeps" / _stamp())
    entries = [manifest.Member(index=i, overrides=m, job_dir=str((sweep_dir / _member_name(i, m, swept)).resolve()))
               for i, m in enumerate(members)]
    if dry_run:
        print(f"sweep directory: {sweep_dir}  ({len(members)} members, launcher={configs[0].launcher.name})")
        for entry in entries:
            print(f"  [{entry.index}] {' '.join(entry.overrides)}  ->  {entry.job_dir}")
        return 0
    for entry, cfg in zip(entries, configs, strict=True):
        _prepare_job_dir(Path(entry.job_dir), cfg)
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir.resolve()),
                                   command=["orchestra", "sweep", *redact_overrides(overrides)],
                                   launcher=str(configs[0].launcher.name), created_at=manifest.now(),
                                   members=entries, swept_keys=swept))
    print(f"sweep directory: {sweep_dir}  ({len(members)} members, local, "
          f"{configs[0].launcher.parallelism} at a time)", flush=True)
    codes = local.run_members(sweep_dir, entries, [_sys.executable, "-m", "orchestra.job"],
                              parallelism=int(configs[0].launcher.parallelism))
    print_report(sweep_dir)
    failed = [i for i, code in codes.items() if code != 0]
    if failed:
        print(f"{len(failed)} member(s) failed; see log.txt in their job directories", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # wandb records sys.argv in its run metadata; our own parsing uses `args` from here on
        from orchestra.config import redact_overrides

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
            unknown = flags - {"-m", "--multirun", "--dry-run"}
            if unknown:
                raise UserError(f"unknown flag {' '.join(sorted(unknown))}; sweep takes -m and --dry-run")
            if not flags & {"-m", "--multirun"}:
                raise UserError("orchestra sweep needs -m (Hydra multirun), e.g. orchestra sweep method=simclr,byol -m")
            return sweep(overrides, dry_run="--dry-run" in flags)
        raise UserError(f"unknown command '{command}'; commands: train, sweep (see orchestra --help)")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from method_zoo import MethodError

        if isinstance(err, MethodError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
