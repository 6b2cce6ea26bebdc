"""``orchestra report --wandb``: the sweep as a wandb Report (table, kNN and probe top-1 vs step).

Needs a wandb server login and the optional ``wandb-workspaces`` package (``pip install 'orchestra[wandb]'``);
without them it says so in one line, since the local report (written by the caller) already holds everything.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console

from launch import manifest
from orchestra.errors import UserError
from orchestra.jobstate.results import read_results

CURVES = ("knn/top1", "probe/top1")
STEP_METRIC = "trainer/global_step"  # the x-axis orchestra's wandb logger defines for every metric


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _members(sweep_dir: Path) -> list[manifest.Member]:
    try:
        return manifest.load(sweep_dir).members
    except manifest.ManifestError as err:
        raise UserError(str(err)) from None


def _logger_settings(sweep_dir: Path) -> dict[str, Any] | None:
    """The logger section of the first member config that logged to wandb."""
    for member in _members(sweep_dir):
        config = manifest.member_dir(sweep_dir, member) / "config.yaml"
        if config.is_file():
            logger = OmegaConf.to_container(OmegaConf.load(config)).get("logger") or {}
            if logger.get("kind") == "wandb":
                return logger
    return None


def _members_table(sweep_dir: Path) -> str:
    lines = ["| # | member | state | kNN top-1 | probe top-1 |", "|---|---|---|---|---|"]
    for member in _members(sweep_dir):
        try:
            results = read_results(manifest.member_dir(sweep_dir, member) / "results.json")
        except UserError:  # unreadable as JSON, or not readable at all
            results = {"state": "UNREADABLE"}
        metrics = results.get("metrics", {}) if results.get("state") == "COMPLETED" else {}
        cells = [f"{metrics[k]:.4f}" if k in metrics else "—" for k in CURVES]
        lines.append(f"| {member.index} | {Path(member.job_dir).name} | {results.get('state', member.state)} | "
                     f"{' | '.join(cells)} |")
    return "\n".join(lines)


def report_markdown(sweep_dir: Path) -> str:
    """The local report.md without its figure links (local PNGs do not travel), or a member table without one."""
    local = sweep_dir / "report.md"
    if not local.is_file():
        return _members_table(sweep_dir)
    kept = [line for line in local.read_text().splitlines()
            if not re.match(r"\s*!\[", line) and line.strip() != "## Figures"]
    return "\n".join(kept)


def build_report(sweep_dir: Path, project: str, entity: str | None = None) -> Any:
    """The wandb Report object for a sweep (not saved): its table and curves over the runs of the sweep's group."""
    import wandb_workspaces.reports.v2 as wr

    group = sweep_dir.name
    runset = wr.Runset(entity=entity or "", project=project, name=f"sweep {group}",
                       filters=f"Metric('Group') == '{group}'")
    panels = [wr.LinePlot(title=f"{name} vs step", x=STEP_METRIC, y=[name]) for name in CURVES]
    blocks = [
        wr.H1(text=f"Sweep {group}"),
        wr.MarkdownBlock(text=report_markdown(sweep_dir)),
        wr.PanelGrid(runsets=[runset], panels=panels),
    ]
    settings: dict[str, Any] = {"entity": entity} if entity else {}
    return wr.Report(project=project, title=f"orchestra sweep {group}",
                     description="kNN and linear-probe top-1 on the validation split; the table reports the last "
                                 "validation", blocks=blocks, **settings)


def publish_report(sweep_dir: Path, console: Console) -> None:
    from orchestra.tracking.wandb_login import LOGIN_HINT, has_login
    from orchestra.tracking.wandb_sync import offline_runs

    sweep_dir = Path(sweep_dir)
    missing = importlib.util.find_spec("wandb_workspaces") is None
    install = "pip install wandb-workspaces (or 'orchestra[wandb]')"
    if not has_login():
        extra = f", and {install}" if missing else ""
        _say(console, f"wandb report: skipped; it needs a wandb server login ({LOGIN_HINT}{extra}); the local report "
                      f"is written either way")
        return
    if missing:
        _say(console, f"wandb report: skipped; it needs the wandb-workspaces package: {install}")
        return
    try:
        logger = _logger_settings(sweep_dir)
        if logger is None:
            _say(console, f"wandb report: skipped; no member of {sweep_dir.name} was trained with logger=wandb")
            return
        waiting = sum(not run.synced for run in offline_runs(sweep_dir))
        report = build_report(sweep_dir, project=logger.get("project") or "orchestra", entity=logger.get("entity"))
        report.save()
    except Exception as err:  # a server problem must not hide that the local report was written
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        _say(console, f"wandb report: not published ({type(err).__name__}: {reason}); the local report is complete")
        return
    unsynced = f"; {waiting} offline run(s) not uploaded yet: orchestra sync {sweep_dir}" if waiting else ""
    _say(console, f"wandb report: {report.url}{unsynced}")
