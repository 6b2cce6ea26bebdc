"""The ``orchestra`` command: a dispatch table from command name to the module that runs it.

This module parses only the command name (and ``--help``/``--version``); every command module exposes ``USAGE`` and
``run(args) -> int`` and imports what it needs (torch included) inside ``run``, so help, ``--version`` and the
quick commands stay light. Errors a user can fix reach the terminal as one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import NamedTuple

from orchestra.errors import UserError


class Command(NamedTuple):
    module: str  # the module exposing USAGE and run(args)
    synopsis: str  # the arguments, as in the usage line
    summary: str  # one line: what it does


COMMANDS: dict[str, Command] = {
    "train": Command("orchestra.cli.train", "[key=value ...]", "train one run in this process"),
    "sweep": Command("orchestra.cli.sweep", "[key=a,b,c ...] -m [--dry-run] [--wait]",
                     "one run per combination of the comma lists (Hydra multirun)"),
    "status": Command("orchestra.cli.status", "[SWEEP_DIR]",
                      "state of every member (latest sweep by default), log tail of failures"),
    "resume": Command("orchestra.cli.resume", "[--diverged] [SWEEP_DIR]",
                      "re-run the members that did not complete, from their last.ckpt"),
    "cancel": Command("orchestra.cli.cancel", "[SWEEP_DIR]", "cancel the members still queued or running"),
    "sync": Command("orchestra.cli.sync", "SWEEP_DIR [--dry-run]",
                    "upload the members' offline wandb runs (needs `wandb login`)"),
    "report": Command("orchestra.cli.report", "[SWEEP_DIR] [--wandb]",
                      "comparison table (mean ± std over seeds), report files, plots"),
    "eval": Command("orchestra.cli.eval", "SWEEP_DIR|JOB_DIR",
                    "offline linear evaluation of frozen backbones; adds linear_top1 to results"),
    "cluster": Command("orchestra.cli.cluster", "up|down|status [--dir DIR]",
                       "a single-node development SLURM cluster on this machine"),
    "data": Command("orchestra.cli.data", "pack SRC DST [--size 256] [--skip-bad-images] [--workers N]",
                    "decode an image folder once into a packed dataset (data=packed)"),
}

HELP_FLAGS = ("-h", "--help")

EXAMPLES = """examples:
  orchestra train method=byol trainer.max_epochs=2
  orchestra sweep method=simclr,byol,vicreg -m
  orchestra sweep method=simclr seed=0,1,2 optim.lr=0.001,0.002 -m
  orchestra sweep method=simclr,byol,vicreg launcher=slurm launcher.partition=gpu -m
"""


def _usage() -> str:
    lines = ["usage: orchestra COMMAND [ARGS...]",
             "       orchestra COMMAND --help    that command's usage and options",
             "       orchestra --version", "", "commands:"]
    for name, command in COMMANDS.items():
        head = f"  {name:<7} {command.synopsis}"
        if len(head) > 36:  # a long synopsis gets the summary on a line of its own
            lines += [head, f"{'':<38}{command.summary}"]
        else:
            lines.append(f"{head:<38}{command.summary}")
    return "\n".join([*lines, "", EXAMPLES])


def _help() -> str:
    from orchestra.config.compose import GROUPS, group_options  # omegaconf, not torch

    lines = [_usage(), "config groups (choose with group=option):"]
    for group in GROUPS:
        lines.append(f"  {group:<9} {', '.join(group_options(group))}")
    lines.append("\nany other key of the config can be set with key=value (see conf/config.yaml).")
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version, or pyproject.toml's in a source checkout that is not installed."""
    from importlib import metadata

    try:
        return metadata.version("orchestra")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def wants_help(args: list[str]) -> bool:
    """-h/--help among a command's own arguments (before a `--`, after which everything is an override)."""
    own = args[:args.index("--")] if "--" in args else args
    return any(a in HELP_FLAGS for a in own)


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in (*HELP_FLAGS, "help"):
        if args[1:2] and args[0] == "help" and args[1] in COMMANDS:  # orchestra help sweep
            print(importlib.import_module(COMMANDS[args[1]].module).USAGE)
        else:
            print(_help())
        return 0
    if args[0] in ("--version", "-V"):
        print(f"orchestra {version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        raise UserError(f"unknown command '{name}'; commands: {', '.join(COMMANDS)} (see orchestra --help)")
    module = importlib.import_module(COMMANDS[name].module)
    if wants_help(rest):
        print(module.USAGE)
        return 0
    return module.run(rest)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C outside a training run (which saves and says how to continue itself)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `orchestra ... | head`: the reader left; no traceback, and none at exit either
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if "method_zoo" in sys.modules:  # a MethodError can only come from a method that was imported
            from method_zoo import MethodError

            if isinstance(err, MethodError):
                print(f"error: {err}", file=sys.stderr)
                return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
