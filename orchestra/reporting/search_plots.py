"""A search sweep's figures as PNG bytes: the optimisation history and the parameters' importance.

Importance uses optuna's PED-ANOVA evaluator: in optuna 5.0 it is the one that needs no scikit-learn (fANOVA, the
default, and mean decrease impurity both import it). It is computed from the COMPLETED trials' objectives as the
results files hold them, so the figure and the table rank the same numbers.
"""

from __future__ import annotations

import warnings
from typing import Any

from orchestra.reporting.plots import _png
from orchestra.reporting.search_summary import SearchReport

MIN_COMPLETE = 4  # below this PED-ANOVA's top quantile is the whole study and every parameter scores the same
IMPORTANCE_METHOD = "PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator), over the COMPLETED trials"


def importances(report: SearchReport) -> tuple[dict[str, float] | None, str]:
    """(parameter -> importance, how it was computed), or (None, why there is none yet)."""
    done = [t for t in report.rows.trials if t.objective is not None and t.distributions]
    if len(done) < MIN_COMPLETE:
        return None, (f"parameter importance needs >= {MIN_COMPLETE} COMPLETED trials with their parameters in the "
                      f"journal; this study has {len(done)}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=report.rows.direction)
    for trial in done:
        study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                  value=trial.objective))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    if any("will be equal" in str(w.message) for w in caught):
        return None, "parameter importance: the completed trials do not separate a top group yet (PED-ANOVA)"
    return dict(found), IMPORTANCE_METHOD


def optimisation_history(report: SearchReport) -> bytes:
    """Objective per trial number, the best so far as a step line, pruned trials as crosses where they stopped."""
    from matplotlib.figure import Figure

    rows = report.rows
    figure = Figure(figsize=(8, 4.5))
    ax = figure.subplots()
    trials = sorted(rows.trials, key=lambda t: t.number)
    done = [t for t in trials if t.objective is not None]
    if done:
        ax.plot([t.number for t in done], [t.objective for t in done], "o", color="C0",
                label=f"completed trial ({len(done)})")
        pick = max if rows.direction == "maximize" else min
        best: list[float] = []
        for t in done:
            best.append(t.objective if not best else pick(best[-1], t.objective))
        last = max(t.number for t in trials)  # carried to the last trial: later ones did not beat it
        ax.step([t.number for t in done] + [last], [*best, best[-1]], where="post", color="C3", label="best so far")
    pruned = [t for t in trials if t.state == "PRUNED" and t.last_value is not None]
    if pruned:
        ax.plot([t.number for t in pruned], [t.last_value for t in pruned], "x", color="grey", markersize=8,
                label=f"pruned trial, value when pruned ({len(pruned)})")
    if not done and not pruned:
        ax.text(0.5, 0.5, "no trial has a value yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{rows.metric} (last validation)")
    ax.set_title(f"optimisation history ({rows.direction} {rows.metric})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return _png(figure)


def parameter_importance(report: SearchReport, found: tuple[dict[str, float] | None, str]) -> bytes:
    from matplotlib.figure import Figure

    values, how = found
    figure = Figure(figsize=(8, 1.2 + 0.5 * max(1, len(values or {}))))
    ax = figure.subplots()
    if values:
        names = list(values)[::-1]  # most important on top
        bars = ax.barh(names, [values[n] for n in names], color="C0")
        ax.bar_label(bars, labels=[f"{values[n]:.3f}" for n in names], fontsize=8, padding=2)
        ax.set_xlim(0, max(1.0, max(values.values()) * 1.15))
        ax.set_xlabel("importance (sums to 1)")
    else:
        ax.text(0.5, 0.5, how, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
    ax.set_title(f"parameter importance for {report.rows.metric}: {how if values else 'not computed'}", fontsize=9)
    return _png(figure)


def draw_search(report: SearchReport, found: tuple[dict[str, float] | None, str] | None = None
                ) -> tuple[dict[str, bytes], tuple[dict[str, float] | None, str]]:
    """The PNGs by file name, and the importances they show (the text formats print them too)."""
    found = found or importances(report)
    figures: dict[str, Any] = {"optimization_history.png": optimisation_history(report),
                               "param_importance.png": parameter_importance(report, found)}
    return figures, found
