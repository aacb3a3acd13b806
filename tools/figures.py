"""report.py's figures, from plain numbers, drawn at the width they are placed at (typeset.TEXT_WIDTH_IN) so that
a font's size is its printed size; every axis labelled with its unit, legends outside the axes."""
import textwrap
from typing import Any, Optional

import numpy as np

import utils
from tools import typeset

STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "figure.titlesize": 8}


def pyplot() -> Any:
    plt = utils.pyplot()
    plt.rcParams.update(STYLE)
    return plt


def grid(panels: int, columns: int, row_height: float, steps: Optional[str] = None, **shared: Any) -> tuple:
    """A page-wide figure of `panels` gridded axes in rows of `columns` (unused ones hidden); steps: the x label."""
    rows, plt = -(-panels // columns), pyplot()
    fig, axes = plt.subplots(rows, columns, figsize=(typeset.TEXT_WIDTH_IN, row_height * rows), squeeze=False,
                             layout="constrained", **shared)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    for ax in axes.flat[:panels]:
        ax.grid(alpha=0.3)
        if steps:  # in thousands of training steps, at most 3 ticks
            ax.set(xlabel=steps)
            ax.xaxis.set_major_locator(plt.MaxNLocator(3))
            ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}")
    return fig, list(axes.flat[:panels])


def band(ax: Any, curve: tuple, color: str, label: Optional[str] = None, **style: Any) -> None:
    """A (steps, mean, std, ...) curve with its ± std band."""
    steps, mean, std = curve[:3]
    ax.plot(steps, mean, color=color, label=label, **style)
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def legend_above(fig: Any, axes: list) -> None:
    """One legend for the figure, above its panels (never on the data)."""
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=min(4, len(handles)), frameon=False)


def training(tasks: dict) -> Any:
    """Eval score (top) and action loss (bottom) over training; tasks: {name: (score curve, loss curve, bar)}."""
    fig, axes = grid(2 * len(tasks), len(tasks), 1.8, steps="training step (thousands)")
    for score_ax, loss_ax, (name, (score, loss, bar)) in zip(axes, axes[len(tasks):], tasks.items()):
        band(score_ax, score, "C0", "eval (10 episodes), mean ± std over seeds", marker="o", markersize=2)
        if bar is not None:
            score_ax.axhline(bar, color="C3", linestyle="--", linewidth=1, label="the assignment's bar")
        band(loss_ax, loss, "C1")
        loss_ax.set(yscale="log", ylabel="action MSE (actions in [-1, 1])")
        loss_ax.yaxis.set_minor_formatter(pyplot().NullFormatter())
        score_ax.set(title=name, ylabel="score (D4RL normalized)")
    legend_above(fig, axes[:len(tasks)])
    return fig


def datasets(scores: dict, bars: dict) -> Any:
    """Each dataset's trajectory returns (scores: {name: returns}) as a histogram; its mean, best and bar as lines."""
    fig, axes = grid(len(scores), 2, 1.55)
    for ax, (name, values) in zip(axes, scores.items()):
        ax.hist(values, bins=40, color="C0", alpha=0.8)
        ax.axvline(values.mean(), color="black", linestyle=":", label="the data's mean")
        ax.axvline(values.max(), color="C2", linestyle="--", label="the data's best trajectory")
        if bars.get(name) is not None:
            ax.axvline(bars[name], color="C3", linewidth=1.2, label="the assignment's bar")
        ax.set(title=f"{name}: {len(values)} trajectories", xlabel="trajectory return (D4RL normalized)",
               ylabel="trajectories (count)")
    legend_above(fig, axes)
    return fig


def sweep(sweeps: dict, best: dict) -> Any:
    """Achieved against target, a panel per task; sweeps: {name: (targets, achieved (targets, seeds))}."""
    fig, axes = grid(len(sweeps), 3, 2.0)
    for ax, (name, (targets, achieved)) in zip(axes, sweeps.items()):
        ax.plot(targets, targets, color="black", linestyle="--", linewidth=1, label="achieved = target")
        band(ax, (targets, achieved.mean(1), achieved.std(1, ddof=1 if achieved.shape[1] > 1 else 0)), "C0",
             "achieved, mean ± std over seeds", marker="o", markersize=2)
        if name in best:
            ax.axhline(best[name], color="C2", linestyle=":", label="the data's best trajectory")
        ax.set(title=name, xlabel="target return (D4RL normalized)", ylabel="achieved (D4RL normalized)")
    legend_above(fig, axes)
    return fig


def bars(results: dict, settings: tuple) -> Any:
    """Each setting's mean final score per task, its seeds as dots, its baseline's mean as a short line, hatched where
    trained at another condition; results: {task: {setting: (scores, baseline mean, other condition?)}}."""
    fig, ax = pyplot().subplots(figsize=(typeset.TEXT_WIDTH_IN, 2.7), layout="constrained")
    width = 0.8 / len(settings)
    for j, name in enumerate(settings):
        for i, found in enumerate(results.values()):
            if name not in found:
                continue
            scores, baseline, other = found[name]
            x = i + (j - (len(settings) - 1) / 2) * width
            ax.bar(x, np.mean(scores), width * 0.9, color=f"C{j}", alpha=0.6, label=name,
                   hatch="//" if other else None, edgecolor="black" if other else None, linewidth=0)
            ax.plot([x] * len(scores), scores, "o", color="black", markersize=2)
            ax.hlines(baseline, x - width * 0.45, x + width * 0.45, color="black", linewidth=1,
                      label="its baseline's mean")
    ax.set_xticks(range(len(results)), list(results))
    ax.set(ylabel="final score (D4RL normalized)", xlabel="task (dataset)")
    ax.grid(alpha=0.3, axis="y")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    ax.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def family(curves: dict, default: str) -> Any:
    """A panel per setting of its eval score curve (or None), on one y-range, the default's grey in each."""
    fig, axes = grid(len(curves), 4, 1.6, steps="step (thousands)", sharex=True, sharey=True)
    for ax, (name, curve) in zip(axes, curves.items()):
        if curves.get(default) is not None and name != default:
            ax.plot(*curves[default][:2], color="grey", linewidth=1, label="default (DT, all data)")
        if curve is not None:
            band(ax, curve, "C0", "this setting, mean ± std over seeds")
        ax.set_title(textwrap.fill(name, 30), fontsize=7)
        ax.set(ylabel="score (normalized)")
        ax.tick_params(labelleft=True, labelbottom=True)
    legend_above(fig, axes)
    return fig
