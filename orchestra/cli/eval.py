"""``orchestra eval SWEEP_DIR|JOB_DIR``: which members to evaluate, and one line per member on what happened."""

from __future__ import annotations

from pathlib import Path

from orchestra.cli.args import split
from orchestra.errors import UserError

USAGE = """usage: orchestra eval SWEEP_DIR|JOB_DIR

Offline linear evaluation of frozen backbones: for one job directory, or every COMPLETED member of a sweep (the
others are skipped with a note), train a linear classifier on the backbone's features from checkpoints/last.ckpt
and add linear_top1 to the member's results.json (orchestra report then shows it).

options:
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) != 1 or flags:
        raise UserError("usage: orchestra eval SWEEP_DIR|JOB_DIR (a sweep directory or one member's)")
    return eval_command(paths[0])


def _member_dirs(sweep_dir: Path) -> list[tuple[str, Path]]:
    """Each readable member's name and job dir; an entry of sweep.json that is not one gets a line and no run."""
    from launch import manifest
    from orchestra.sweep.records import load_manifest

    sweep, problems = load_manifest(sweep_dir)
    for problem in problems:
        print(f"skipped: {problem}", flush=True)
    found = []
    for member in sweep.members:
        label = " ".join(o for o in member.overrides if o.split("=", 1)[0] in sweep.swept_keys) or "all swept"
        found.append((f"member {member.index} ({label})", manifest.member_dir(sweep_dir, member)))
    return found


def _why_not(job_dir: Path) -> str | None:
    """Why a member cannot be evaluated, or None when it can; ``UserError`` (naming the file and the fix) when its
    results file is not JSON, not the shape a job writes, or not readable at all."""
    from orchestra.jobstate.results import read_checked_results

    results = read_checked_results(job_dir / "results.json")
    if not results:
        return "has not started (no results.json)"
    state = results.get("state")
    if state != "COMPLETED":
        return f"is {state or 'not finished'} (linear evaluation needs a COMPLETED member)"
    if not (job_dir / "checkpoints" / "last.ckpt").exists():  # a file, or an FSDP checkpoint directory
        return f"has no {job_dir / 'checkpoints' / 'last.ckpt'}"
    return None


def eval_command(path: str) -> int:
    """Evaluate one job directory, or every COMPLETED member of a sweep (the others are skipped with a note)."""
    from launch import manifest

    target = Path(path)
    if not target.is_dir():
        raise UserError(f"{target} is not a directory; pass a sweep directory or one member's job directory")
    if manifest.is_sweep(target):
        members = _member_dirs(target.resolve())
    elif (target / "config.yaml").is_file():
        members = [(target.name, target.resolve())]
        reason = _why_not(target)
        if reason:
            raise UserError(f"{target} {reason}; run it to the end first (orchestra resume / train)")
    else:
        raise UserError(f"{target} is neither a sweep directory (sweep.json) nor a job directory (config.yaml)")
    from orchestra.evaluation.linear_eval import evaluate

    evaluated = 0
    for name, job_dir in members:
        try:
            reason = _why_not(job_dir)
            if reason:
                print(f"{name}: skipped, it {reason}", flush=True)
                continue
            results = evaluate(job_dir)
        except UserError as err:  # one unreadable member must not stop the others
            print(f"{name}: skipped, {err}", flush=True)
            continue
        info = results["linear_eval"]
        print(f"{name}: linear top-1 {results['linear_top1']:.4f} (L2 {info['weight_decay']:g}, "
              f"{info['train_images']} train / {info['val_images']} val images, step {info['checkpoint_step']})",
              flush=True)
        evaluated += 1
    if manifest.is_sweep(target):
        print(f"evaluated {evaluated} of {len(members)} member(s); compare with the online numbers: "
              f"orchestra report {target}")
    return 0 if evaluated else 1
