"""report.pdf: a short paper from finished run folders. The answers first, one results table, a figure for each
question of the assignment, the method; every run's curves, settings and data in an appendix.

    python report.py gallery/*/ --standin --findings gallery/findings.md --out gallery/report
    python report.py runs/<date>/<time>-sweep                     # a study: the sweep folder stands for its jobs
    python report.py runs/<date>/<time> --publish gallery/<name>  # instead: copy one run folder to share

Runs are grouped by task (env-dataset) and named by their setting in words ("DT, top 10%"): the default config
is the reference of its task, percentile BC (buffer.top_percent, model.condition_on_return) and the auxiliary
losses (train.aux_*_coef) answer the bonus questions, any other setting is shown in the appendix. The findings
file (--findings: markdown headings, paragraphs, bullet lists) gives the words: its "## In short" section opens
the report, its other sections follow the figures. Outputs: <out>.pdf, <out>.md and the figures <out>_*.png,
under runs/ unless --out says otherwise; an existing file is never replaced unasked.
"""
import argparse
import os
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import utils
from cfgs import schema
from plumbing.runfolder import Run, RunError
from tools import typeset
from tools.typeset import bullets, heading, image, pagebreak, paragraph, table

ROOT = Path(__file__).resolve().parent
ENVS, DATASETS = schema.ENVS, schema.DATASETS
# Keys that are a run's task or bookkeeping, not its setting (they never make two runs differ in a comparison)
BOOKKEEPING = ("resume", "seeds", "buffer.dataset", "buffer.source", "buffer.files", "buffer.sha256", "buffer.path",
               "device", "eval.video", "logger", "env.kwargs",
               "wandb.", "env.assignment_bar", "env.dt_paper_score", "env.ref_source", "train.threads",
               "train.log_every", "train.checkpoint_every")
AUTO_MEANS = {"train.precision": "bf16"}  # `auto` resolves to bf16 on the reference runs' CPU
PERCENTILE_KEYS = ("buffer.top_percent", "model.condition_on_return")
AUX_KEYS = ("train.aux_state_coef", "train.aux_rtg_coef")
QUESTION_KEYS = (*PERCENTILE_KEYS, *AUX_KEYS, "train.precision")  # always named in a setting
PERCENTILE_SETTINGS = ("DT, all data", "DT, top 10%", "DT, top 25%", "BC, all data", "BC, top 10%")
AUX_SETTINGS = ("action only", "+ next state", "+ next state and return-to-go")
MIN_FONT_PT, MAX_LEGEND_ENTRIES = 7.0, 8
FIGURE_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
                "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 8}


# ---------------------------------------------------------------------------------------------
# Reading finished runs


@dataclass
class FinishedRun:
    """What the report reads of a finished run (through its owner, runfolder.Run): label, flat config, summary."""
    run: Run
    config: dict  # dotted keys, today's schema, dataset paths as file names
    summary: dict
    shared: dict = field(default_factory=dict)  # settings every run of its task has (by_task): not named

    @property
    def label(self) -> str:
        return self.run.name  # <date>/<time>: no path of the machine

    @property
    def task(self) -> str:
        """env-dataset; with the source and env when its score is not on D4RL's scale (Minari, -v5 envs)."""
        name = f"{self.summary['env']}-{Path(self.summary['dataset']).stem}"
        if self.on_d4rl_scale:
            return name
        source = self.config.get("buffer.source")
        scores = self.config.get("env.ref_source", "minari" if source == "minari" else "d4rl")
        return f"{name} ({source}, {self.config['env.id']}, scores: {scores})"

    @property
    def on_d4rl_scale(self) -> bool:
        """D4RL files and scores in the assignment's -v4 envs: the score compares with the bars and the DT paper."""
        config = self.config
        return (config.get("buffer.source", "d4rl") == "d4rl" and config.get("env.id", "-v4").endswith("-v4")
                and config.get("env.ref_source", "d4rl") == "d4rl")

    def scores(self) -> list:
        """Each finished seed's final normalized score (a NaN or inf one is left out: nan_seeds names it)."""
        return [f["score_mean"] for f in self.summary["per_seed"] if np.isfinite(f["score_mean"])]

    def nan_seeds(self) -> list:
        """The seeds whose final score is NaN or inf."""
        return [f["seed"] for f in self.summary["per_seed"] if not np.isfinite(f["score_mean"])]

    def curve(self, kind: str, key: str) -> Optional[tuple]:
        """(steps, mean, std) over seeds of column `key` of each seed's `kind` table (train, eval); None where no
        seed has it."""
        curve = utils.mean_std_over_seeds([t for t in self.run.tables(kind) if key in t], key)
        return None if curve is None else curve[:3]


def load_run(path: Union[str, Path]) -> FinishedRun:
    """A finished run folder; SystemExit with one line if it is not one."""
    run = Run(path)
    if not run.dir.is_dir():
        raise SystemExit(f"error: {path}: no such folder")
    try:
        summary = run.summary()
    except RunError as e:
        raise SystemExit(f"error: {e}") from None
    missing = [name for name, there in (("config.yaml", run.holds_run()), ("summary.json", summary is not None))
               if not there]
    if missing:
        raise SystemExit(f"error: {path}: no {' and no '.join(missing)} there; "
                         "give a run folder that main.py has finished (it writes both)")
    config = run.saved_config()
    try:  # in today's keys, so that runs of older code differ only where their settings do
        config = OmegaConf.to_container(schema.typed(config), resolve=True)
    except (schema.ConfigError, OmegaConfBaseException):
        pass
    for key in ("files", "path"):  # the files' names: their folder is the machine's, not the run's
        value = config.get("buffer", {}).get(key)
        if value:
            config["buffer"][key] = Path(value).name if isinstance(value, str) else [Path(v).name for v in value]
    return FinishedRun(run, flatten(config), summary)


def expand_sweeps(paths: list) -> list:
    """A multirun's runs/<date>/<time>-sweep folder stands for its job folders 0, 1, ... (each a run)."""
    return [p for path in paths for p in ([job.dir for job in Run.of_sweep(path)] or [path])]


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {"dotted.key": value}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@lru_cache(maxsize=None)
def default_config(env: str) -> dict:
    """cfgs/'s values for env=<env>, flat (what `python main.py env=<env>` starts from)."""
    return flatten(OmegaConf.to_container(schema.defaults(env), resolve=True))


def changes(run: FinishedRun) -> dict:
    """The run's settings that differ from cfgs/'s defaults for its env, but for those its whole task shares."""
    return {k: v for k, v in all_changes(run).items() if k not in run.shared}


def all_changes(run: FinishedRun) -> dict:
    """The run's settings that differ from cfgs/'s defaults for its env: {key: value}."""
    default = default_config(run.config.get("env.name"))
    changed = {}
    for key, value in run.config.items():
        expected, value = (AUTO_MEANS.get(key, v) if v == "auto" else v for v in (default.get(key, value), value))
        if not key.startswith(BOOKKEEPING) and value != expected:
            changed[key] = value
    return changed


def setting(run: FinishedRun) -> str:
    """The run's setting in words: 'DT, all data', 'BC, top 10%', 'DT, all data, + next state', 'DT, fp32'."""
    changed = changes(run)
    words = ["BC" if changed.pop("model.condition_on_return", True) is False else "DT"]
    top = changed.pop("buffer.top_percent", 100.0)
    words.append("all data" if top >= 100 else f"top {top:g}%")
    state, rtg = changed.pop("train.aux_state_coef", 0.0), changed.pop("train.aux_rtg_coef", 0.0)
    if state or rtg:
        words.append(" and ".join(f"+ {name}" + (f" x{coef:g}" if coef != 1 else "")
                                  for name, coef in (("next state", state), ("return-to-go", rtg)) if coef)
                     .replace(" and +", " and"))
    named = {"buffer.sample_by": "sampled by {}", "model.dropout": "dropout {}", "train.precision": "{}",
             "model.implementation": "{}", "eval.target_return": "target {}"}
    words += [named.get(key, key + " {}").format(value) for key, value in sorted(changed.items())]
    return ", ".join(str(w).replace("models.ReferenceDT", "plain eager model") for w in words)


def percentile_setting(run: FinishedRun) -> Optional[str]:
    """'DT, top 10%' etc. for runs that differ from the default in percentile BC's keys (and precision) only."""
    if set(changes(run)) - {*PERCENTILE_KEYS, "train.precision"}:
        return None
    name = setting(run).replace(f", {run.config.get('train.precision')}", "")
    return name if name in PERCENTILE_SETTINGS else None


def aux_setting(run: FinishedRun) -> Optional[str]:
    """'action only', '+ next state', '+ next state and return-to-go' for runs that change only the aux losses."""
    changed = changes(run)
    if set(changed) - {*AUX_KEYS, "train.precision"}:
        return None
    state, rtg = changed.get(AUX_KEYS[0], 0.0), changed.get(AUX_KEYS[1], 0.0)
    return {(False, False): AUX_SETTINGS[0], (True, False): AUX_SETTINGS[1], (True, True): AUX_SETTINGS[2]}.get(
        (bool(state), bool(rtg)))


def overrides(run: FinishedRun) -> str:
    """The run's setting as main.py's overrides of cfgs/: 'env=hopper buffer.top_percent=10.0'."""
    changed = sorted(all_changes(run).items())
    return " ".join([f"env={run.config.get('env.name')}", *(f"{k}={v}" for k, v in changed)])


def task_order(task: str) -> tuple:
    env, _, dataset = task.partition("-")
    return (ENVS.index(env) if env in ENVS else len(ENVS), DATASETS.index(dataset) if dataset in DATASETS else 99,
            task)


def by_task(runs: list) -> dict:
    """{task: {setting: [runs]}}, tasks in the order of cfgs' envs and datasets; runs of one setting pool seeds.

    A change every run of a task shares (train.steps=200 of a quick study) is the task's, not a setting: it is
    named beside the task (shared_text); the questions' keys always count as settings.
    """
    tasks = {}
    for run in sorted(runs, key=lambda r: task_order(r.task)):
        tasks.setdefault(run.task, []).append(run)
    grouped = {}
    for name, members in tasks.items():
        shared = [set(all_changes(r).items()) for r in members]
        common = {k: v for k, v in set.intersection(*shared) if k not in QUESTION_KEYS}
        for run in members:
            run.shared = common
            grouped.setdefault(name, {}).setdefault(setting(run), []).append(run)
    return grouped


def shared_text(settings: dict) -> str:
    """' (train.steps=200)': the changes every run of a task shares, or ''."""
    shared = next(iter(settings.values()))[0].shared
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(shared.items()))})" if shared else ""


def pooled_scores(runs: list) -> list:
    return [s for run in runs for s in run.scores()]


def reference(settings: dict) -> Optional[list]:
    """A task's default runs (its setting 'DT, all data'), or None."""
    return settings.get(PERCENTILE_SETTINGS[0])


# ---------------------------------------------------------------------------------------------
# Numbers in words


def number(x: float, digits: int = 1) -> str:
    """x to `digits` decimals; 'n/a' for a missing or non-finite value (no nan or inf in a sentence)."""
    return f"{x:.{digits}f}" if x is not None and np.isfinite(x) else "n/a"


def score_text(scores: list) -> str:
    """'60.0 ± 1.6' over seeds; no std over one seed; 'n/a' with none."""
    if not scores:
        return "n/a"
    std = utils.spread(scores)
    return number(np.mean(scores)) + (f" ± {number(std)}" if std is not None else "")


def seeds_text(scores: list) -> str:
    return ", ".join(number(s) for s in scores) or "none"


def against(scores: list, base: list) -> str:
    """'+4.6, beyond the seeds' spread (2.1)': a setting's mean against the default's."""
    if not scores or not base:
        return "n/a"
    delta, spread = np.mean(scores) - np.mean(base), np.std(scores) + np.std(base)
    if min(len(scores), len(base)) < 2:
        return f"{delta:+.1f} (one seed on a side: no spread to judge by)"
    verdict = "beyond" if abs(delta) > spread else "within"
    return f"{delta:+.1f}, {verdict} the seeds' spread ({spread:.1f})"


def env_facts(env: str) -> dict:
    path = ROOT / "cfgs" / "env" / f"{env}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}


def bar_and_paper(run: FinishedRun) -> tuple:
    """The assignment's bar and the DT paper's D4RL score of the run's task (None where there is none)."""
    if not run.on_d4rl_scale:
        return None, None
    facts, dataset = env_facts(run.summary["env"]), Path(run.summary["dataset"]).stem
    return facts.get("assignment_bar", {}).get(dataset), facts.get("dt_paper_score", {}).get(dataset)


# ---------------------------------------------------------------------------------------------
# The datasets: each task's trajectory returns (normalized), read from its file where it is on this machine


def data_scores(run: FinishedRun) -> Optional[np.ndarray]:
    """The normalized returns of the trajectories in the run's dataset files, where they are on this machine."""
    from plumbing.sources import run_dataset_files
    paths = run_dataset_files(run.run.saved_config().get("buffer", {}))
    return None if paths is None else np.concatenate([trajectory_scores(p) for p in paths])


@lru_cache(maxsize=None)
def trajectory_scores(path: Path) -> np.ndarray:
    from buffer import trajectory_scores as read
    return read(path)


def different_files(runs: list) -> list:
    """Sentences naming runs of one comparison that read different files of the same name (by SHA-256)."""
    by_name = {}
    for run in runs:
        for file, sha in zip(run.config.get("buffer.files") or [], run.config.get("buffer.sha256") or []):
            by_name.setdefault(file, {}).setdefault(sha, []).append(run.label)
    return [f"Runs on different files named {name}: " + "; ".join(f"{', '.join(labels)} (SHA-256 {sha[:12]})"
                                                                  for sha, labels in shas.items()) + "."
            for name, shas in by_name.items() if len(shas) > 1]


# ---------------------------------------------------------------------------------------------
# Figures: drawn at the size they are placed on the page, so a font's size is its printed size


def pyplot() -> Any:
    plt = utils.pyplot()
    plt.rcParams.update(FIGURE_STYLE)
    return plt


def legibility_problems(fig: Any) -> list:
    """What would be illegible on the page: text under MIN_FONT_PT, a legend over MAX_LEGEND_ENTRIES entries,
    overlapping tick labels, text cut off at the figure's edge."""
    from matplotlib.legend import Legend
    from matplotlib.text import Text
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), fig.bbox.padded(1)
    ticks = {id(tick.label1): tick for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()}
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and (id(t) not in ticks or shown_tick(ticks[id(t)]))]
    problems = [f"'{t.get_text()}' is {t.get_fontsize():g} pt" for t in texts if t.get_fontsize() < MIN_FONT_PT]
    problems += [f"a legend of {len(lg.get_texts())} entries" for lg in fig.findobj(Legend)
                 if len(lg.get_texts()) > MAX_LEGEND_ENTRIES]
    extents = {id(t): t.get_window_extent(renderer) for t in texts}
    problems += [f"'{t.get_text()}' is cut off" for t in texts
                 if not (frame.contains(*extents[id(t)].min) and frame.contains(*extents[id(t)].max))]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            boxes = sorted((extents[id(t.label1)] for t in axis.get_major_ticks() + axis.get_minor_ticks()
                            if id(t.label1) in extents), key=lambda b: (b.x0, b.y0))
            problems += [f"tick labels of {ax.get_title() or 'a panel'} overlap"
                         for a, b in zip(boxes, boxes[1:]) if a.overlaps(b)]
    return problems


def shown_tick(tick: Any) -> bool:
    """Is the tick inside its axis' view (drawn)?"""
    from matplotlib.axis import XTick
    axis = tick.axes.xaxis if isinstance(tick, XTick) else tick.axes.yaxis
    low, high = sorted(axis.get_view_interval())
    return low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low)


def save_figure(fig: Any, path: Union[str, Path]) -> Path:
    """The figure as a PNG at typeset.DPI (placed at its own width), after its legibility check."""
    problems = legibility_problems(fig)
    if problems or fig.get_figwidth() > typeset.TEXT_WIDTH_IN + 1e-6:
        raise AssertionError(f"{Path(path).name}: illegible on the page: {'; '.join(problems) or 'too wide'}")
    import io
    image_bytes = io.BytesIO()
    fig.savefig(image_bytes, format="png", dpi=typeset.DPI)
    pyplot().close(fig)
    utils.atomic_write_bytes(path, image_bytes.getvalue())
    return Path(path)


def grid(plt: Any, panels: int, columns: int, row_height: float) -> tuple:
    """A figure of `panels` axes in rows of `columns`, page wide; unused axes hidden."""
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(typeset.TEXT_WIDTH_IN, row_height * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:panels])


def training_figure(references: dict) -> Any:
    """The assignment's results figure for the medium tasks: eval score and training loss over training."""
    plt = pyplot()
    tasks = list(references)
    fig, axes = plt.subplots(2, len(tasks), figsize=(typeset.TEXT_WIDTH_IN, 3.8), squeeze=False, layout="constrained")
    for column, name in enumerate(tasks):
        runs = references[name]
        score_ax, loss_ax = axes[0, column], axes[1, column]
        for run in runs[:1]:  # pooled runs share a setting; the first one's curves stand for it
            steps, mean, std = run.curve("eval", "score_mean")
            score_ax.plot(steps, mean, color="C0", marker="o", markersize=2, label="eval, mean of seeds")
            score_ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.25, label="± std")
            loss = run.curve("train", "action_mse") or run.curve("train", "loss")
            loss_ax.plot(loss[0], loss[1], color="C1")
        bar, _ = bar_and_paper(runs[0])
        if bar is not None:
            score_ax.axhline(bar, color="C3", linestyle="--", linewidth=1, label=f"bar {bar:g}")
        score_ax.set(title=name, xlabel="training step", ylabel="normalized score" if column == 0 else None)
        loss_ax.set(xlabel="training step", ylabel="action MSE" if column == 0 else None, yscale="log")
        loss_ax.yaxis.set_minor_formatter(plt.NullFormatter())  # 2x10^-2, 3x10^-2, ... would run into each other
        score_ax.legend(loc="lower right")
        for ax in (score_ax, loss_ax):
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(plt.MaxNLocator(3))
    return fig


def sweep_rows(run: FinishedRun) -> Optional[tuple]:
    """evaluate.py's sweep of the run: (target scores, per-seed achieved scores (targets, seeds)); None without."""
    rows = run.run.run_table("sweep_final.csv")
    if not rows:
        return None
    targets, seeds = np.unique(rows["target"]), np.unique(rows["seed"])
    achieved = np.array([[rows["score"][(rows["target"] == t) & (rows["seed"] == s)].mean() for s in seeds]
                         for t in targets])  # (targets, seeds): each seed's mean over its episodes
    return utils.normalized_score(targets, run.config["env.ref_min_score"], run.config["env.ref_max_score"]), achieved


def sweep_figure(sweeps: dict, datasets: dict) -> Any:
    """Achieved against target normalized score, one panel per task, with the line achieved = target."""
    plt = pyplot()
    fig, axes = grid(plt, len(sweeps), 3, 2.05)
    for i, (ax, (name, (targets, achieved))) in enumerate(zip(axes, sweeps.items())):
        mean, std = achieved.mean(1), achieved.std(1)
        ax.plot(targets, targets, color="black", linestyle="--", linewidth=1, label="achieved = target")
        ax.plot(targets, mean, color="C0", marker="o", markersize=2, label="achieved, mean of seeds")
        ax.fill_between(targets, mean - std, mean + std, color="C0", alpha=0.25)
        if name in datasets:
            ax.axhline(datasets[name].max(), color="C3", linestyle=":", label="data's best trajectory")
        ax.set(title=name, xlabel="target (normalized)", ylabel="achieved" if i % 3 == 0 else None)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="upper left")
    return fig


def grouped_bars(results: dict, settings: tuple) -> Any:
    """Bars of each setting's mean final score per task, its seeds as dots. results: {task: {setting: scores}}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(typeset.TEXT_WIDTH_IN, 2.6), layout="constrained")
    width = 0.8 / len(settings)
    for j, name in enumerate(settings):
        for i, scores in enumerate(r.get(name) for r in results.values()):
            if not scores:
                continue
            x = i + (j - (len(settings) - 1) / 2) * width
            ax.bar(x, np.mean(scores), width * 0.9, color=f"C{j}", alpha=0.6, label=name if i == 0 or
                   not any(results[t].get(name) for t in list(results)[:i]) else None)
            ax.plot([x] * len(scores), scores, "o", color="black", markersize=2)
    ax.set_xticks(range(len(results)), list(results))
    ax.set(ylabel="final normalized score")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def family_figure(settings: dict) -> Any:
    """One task's runs: each setting's eval score over training (mean ± std over seeds), one small panel each."""
    plt = pyplot()
    fig, axes = grid(plt, len(settings), 4, 1.5)
    for ax, (name, runs) in zip(axes, settings.items()):
        curve = runs[0].curve("eval", "score_mean")
        if curve is not None:
            steps, mean, std = curve
            ax.plot(steps, mean, color="C0")
            ax.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.25)
        ax.set_title(textwrap.fill(name, 28), fontsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(2))
        ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------
# The document


def results_table(grouped: dict, datasets: dict, d4rl_scale: bool = True) -> list:
    """Rows of the results table: every task with its default run, on D4RL's scale or on another (never both)."""
    rows = []
    for name, settings in grouped.items():
        runs = reference(settings)
        if not runs or runs[0].on_d4rl_scale != d4rl_scale:
            continue
        scores, (bar, paper) = pooled_scores(runs), bar_and_paper(runs[0])
        if bar is None:
            passed = "-"
        elif len(scores) < 3:
            passed = f"> {bar:g}: n/a ({len(scores)} seed{'s' * (len(scores) != 1)})"
        else:
            passed = f"> {bar:g}: {'yes' if np.mean(scores) > bar else 'no'}"
        data = datasets.get(name)
        rows.append([name + shared_text(settings), score_text(scores), seeds_text(scores), passed,
                     "-" if paper is None else f"{paper:.1f}",
                     "-" if data is None else number(data.mean()), "-" if data is None else number(data.max())])
    return rows


def question_results(grouped: dict, classify: Callable, names: tuple) -> tuple:
    """The runs that answer one question (classify: run -> its setting's name, or None): {task: {setting: pooled
    scores}}, and notes naming the settings that stand in at another precision than the reference runs' bf16."""
    results, notes = {}, []
    for name, settings in grouped.items():
        found = {}
        for run in (r for runs in settings.values() for r in runs):
            key = classify(run)
            if key is not None:
                found.setdefault(key, []).append(run)
        for key, runs in found.items():  # runs at the reference precision where the setting has them
            usual = [r for r in runs if "train.precision" not in changes(r)]
            found[key] = usual or runs
            if not usual:
                notes.append(f"{name}, {key}: {runs[0].config.get('train.precision')}")
        if len(found) > 1:
            results[name] = {k: pooled_scores(found[k]) for k in names if k in found}
    return results, notes


def question_findings(results: dict, baseline: str) -> str:
    """One sentence: which settings move the score beyond the seeds' spread of the baseline, per task."""
    beyond, within = [], 0
    for name, found in results.items():
        for setting_name, scores in found.items():
            if setting_name == baseline or baseline not in found:
                continue
            verdict = against(scores, found[baseline])
            if "beyond" in verdict:
                beyond.append(f"{name}, {setting_name}: {score_text(scores)} ({verdict.split(',')[0]})")
            else:
                within += 1
    moved = "; ".join(beyond) if beyond else "none"
    return (f"Against {baseline}, beyond the seeds' spread: {moved}. Within it: {within} other setting-task "
            f"pair{'s' * (within != 1)}.")


def read_findings(path: Union[str, Path]) -> list:
    """A markdown file of '#' headings, paragraphs and '- ' bullet lists -> blocks."""
    blocks, text, items = [], [], []
    for line in Path(path).read_text().splitlines() + [""]:
        stripped = line.strip()
        if (not stripped or stripped.startswith(("#", "- "))) and text:
            blocks.append(paragraph(" ".join(text)))
            text = []
        if items and not (stripped.startswith("- ") or (stripped and line.startswith("  "))):
            blocks.append(bullets(items))
            items = []
        if stripped.startswith("#"):
            blocks.append(heading(min(3, len(stripped) - len(stripped.lstrip("#"))), stripped.lstrip("# ")))
        elif stripped.startswith("- "):
            items.append(stripped[2:])
        elif stripped and items:
            items[-1] += " " + stripped
        elif stripped:
            text.append(stripped)
    return blocks


SUMMARY_HEADING = "In short"  # the findings' section that opens the report


def split_summary(blocks: list) -> tuple:
    """The findings' "## In short" section (it opens the report) and the other blocks (they follow the figures)."""
    start = next((i for i, block in enumerate(blocks) if block == heading(2, SUMMARY_HEADING)), None)
    if start is None:
        return [], blocks
    end = next((i for i in range(start + 1, len(blocks)) if blocks[i][0] == "heading" and blocks[i][1] <= 2),
               len(blocks))
    return blocks[start:end], blocks[:start] + blocks[end:]


def main_part(runs: list, grouped: dict, datasets: dict, figures: dict, standin: bool,
              findings: Optional[Union[str, Path]]) -> list:
    """The short paper: answers, results, one figure per question, method."""
    label = " (stand-in data)" if standin else ""
    summary, rest = split_summary(read_findings(findings)) if findings else ([], [])
    blocks = [heading(1, f"Decision Transformer on D4RL MuJoCo{label}")]
    if standin:
        blocks.append(paragraph("Every score here is on stand-in datasets made by D4RL's protocol in gymnasium's -v4 "
                                "envs, not on the D4RL release: they compare with D4RL's in spirit, not number for "
                                "number."))
    blocks += summary
    blocks += [heading(2, f"Results{label}"),
               table(["task", "final score", "seeds' scores", "bar (3-seed mean)", "DT paper (D4RL)",
                      "data: mean", "data: best"], results_table(grouped, datasets)),
               paragraph("Final score: the D4RL normalized score of each seed's final evaluation, mean ± std over "
                         "seeds, default config. DT paper: Chen et al. 2021, Table 2 (on D4RL's data). Data: the "
                         "normalized return of the dataset file's trajectories, their mean and the best one.")]
    other_scale = results_table(grouped, datasets, d4rl_scale=False)
    if other_scale:
        blocks += [paragraph("On other scales (Minari's reference scores, or -v5 envs): not comparable with the "
                             "table above, the bars or the DT paper."),
                   table(["task", "final score", "seeds' scores", "bar", "DT paper", "data: mean", "data: best"],
                         other_scale)]
    blocks += [paragraph(s) for s in different_files(runs)]
    nan = [f"{r.label} (seed {', '.join(map(str, r.nan_seeds()))})" for r in runs if r.nan_seeds()]
    if nan:
        blocks.append(paragraph(f"A NaN or inf final score, left out of every number here (its main.log says "
                                f"why): {'; '.join(nan)}."))
    captions = {
        "training": "Evaluation score (10 episodes per eval, mean ± std over seeds) and training loss over training, "
                    "medium datasets, default config.",
        "datasets": "The datasets: each trajectory's return, normalized; the mean (dotted) and the best (dashed).",
        "sweep": "Does the achieved return follow the target return-to-go? Each default run's policies conditioned "
                 "on a sweep of targets (python evaluate.py run=<run>): achieved against target, mean ± std over "
                 "seeds, the line achieved = target, the data's best trajectory dotted.",
        "percentile": "Does percentile behaviour cloning help? DT and plain BC (the same network, its return-to-go "
                      "zeroed) on all the data or its top 10% / 25% of trajectories by return; bars: mean over "
                      "seeds, dots: the seeds. " + figures.get("percentile_text", ""),
        "aux": "Do auxiliary next-state and return-to-go losses help? Bars: mean over seeds, dots: the seeds. "
               + figures.get("aux_text", ""),
    }
    for key in ("training", "datasets", "sweep", "percentile", "aux"):
        if figures.get(key):
            blocks.append(image(figures[key], captions[key]))
    return blocks + rest


def appendix(grouped: dict, figures: dict) -> list:
    """Each task's runs: settings, scores against the default, overrides, data file, and their curves."""
    blocks = [pagebreak(), heading(1, "Appendix: every run"),
              paragraph("Each task's runs by setting (runs of one setting pool their seeds), with the overrides of "
                        "cfgs/ that train it again (python main.py <overrides>) and the dataset file it read.")]
    for name, settings in grouped.items():
        base = pooled_scores(reference(settings) or [])
        rows = [[setting_name, ", ".join(r.label for r in runs), score_text(pooled_scores(runs)),
                 seeds_text(pooled_scores(runs)) + missing_text(runs),
                 "-" if setting_name == PERCENTILE_SETTINGS[0] else against(pooled_scores(runs), base).split(",")[0],
                 overrides(runs[0]), data_identity(runs[0])]
                for setting_name, runs in settings.items()]
        header = ["setting", "run", "final score", "seeds", "vs default", "overrides", "data (SHA-256)"]
        blocks += [heading(2, name + shared_text(settings)), table(header, rows)]
        blocks += [paragraph(s) for s in different_files([r for runs in settings.values() for r in runs])]
        if figures.get(("family", name)):
            blocks.append(image(figures[("family", name)], f"{name}: evaluation score over training per setting "
                                                           f"(mean ± std over seeds)."))
    return blocks


def missing_text(runs: list) -> str:
    """' (missing seeds: day/run: 2; NaN score: day/run: 0)': seeds a run was asked for and did not finish, and
    seeds whose final score is NaN or inf (left out of the numbers); '' if none."""
    missing = [f"{r.label}: {', '.join(map(str, r.summary.get('missing_seeds', [])))}" for r in runs
               if r.summary.get("missing_seeds")]
    nan = [f"{r.label}: {', '.join(map(str, r.nan_seeds()))}" for r in runs if r.nan_seeds()]
    parts = ([f"missing seeds: {'; '.join(missing)}"] if missing else []) + (
        [f"NaN score: {'; '.join(nan)}"] if nan else [])
    return f" ({'; '.join(parts)})" if parts else ""


def data_identity(run: FinishedRun) -> str:
    files, shas = run.config.get("buffer.files") or ["-"], run.config.get("buffer.sha256") or []
    return " + ".join(f"{file} ({sha[:12] if sha else 'not recorded'})"
                      for file, sha in zip(files, [*shas, *[None] * len(files)]))


def draw_figures(runs: list, grouped: dict, datasets: dict, out: str) -> dict:
    """Every figure of the report as <out>_<name>.png; {name: path}, and the question sentences."""
    figures = {}
    medium = {name: reference(s) for name, s in grouped.items() if name.endswith("-medium") and reference(s)}
    if medium:
        figures["training"] = save_figure(training_figure(medium), f"{out}_training.png")
    if datasets:
        figures["datasets"] = save_figure(utils.dataset_returns_figure(datasets), f"{out}_datasets.png")
    sweeps = {name: rows for name, s in grouped.items() if reference(s)
              for rows in [sweep_rows(reference(s)[0])] if rows is not None}
    if sweeps:
        figures["sweep"] = save_figure(sweep_figure(sweeps, datasets), f"{out}_sweep.png")
    for key, classify, names in (("percentile", percentile_setting, PERCENTILE_SETTINGS),
                                 ("aux", aux_setting, AUX_SETTINGS)):
        results, notes = question_results(grouped, classify, names)
        if results:
            figures[key] = save_figure(grouped_bars(results, names), f"{out}_{key}.png")
            figures[f"{key}_text"] = question_findings(results, names[0]) + (
                f" Trained at another precision: {'; '.join(notes)}." if notes else "")
    for i, (name, settings) in enumerate(grouped.items()):
        figures[("family", name)] = save_figure(family_figure(settings), f"{out}_runs{i}.png")
    return figures


def write_report(runs: list, out: str, standin: bool = False,
                 findings: Optional[Union[str, Path]] = None) -> list:
    """<out>.pdf, <out>.md and the figures <out>_*.png, each written atomically; returns their paths."""
    grouped = by_task(runs)
    datasets = {name: scores for name, s in grouped.items() if reference(s)
                for scores in [data_scores(reference(s)[0])] if scores is not None}
    figures = draw_figures(runs, grouped, datasets, out)
    blocks = main_part(runs, grouped, datasets, figures, standin, findings) + appendix(grouped, figures)
    pdf_path, md_path = Path(f"{out}.pdf"), Path(f"{out}.md")
    utils.atomic_write_bytes(pdf_path, typeset.pdf(blocks))
    utils.atomic_write_bytes(md_path, typeset.markdown(blocks, os.path.abspath(md_path.parent)).encode())
    return [pdf_path, md_path, *(p for p in figures.values() if isinstance(p, Path))]


# ---------------------------------------------------------------------------------------------


def new_stem(stem: str) -> str:
    """stem, or stem-1, stem-2, ...: the first whose outputs are all new files (nothing of the user's is replaced)."""
    def taken(s: str) -> bool:
        return any(Path(p).name.startswith(Path(s).name + suffix) for p in Path(s).parent.glob(f"{Path(s).name}*")
                   for suffix in (".pdf", ".md", "_"))
    return next(s for s in (f"{stem}-{i}" if i else stem for i in range(10_000)) if not taken(s))


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders runs/<date>/<time> made by main.py or main_mp.py")
    parser.add_argument("--out", help="path stem of the outputs: <out>.pdf, <out>.md, <out>_*.png (default: "
                                      "runs/report, or runs/report-1, ... where those files exist)")
    parser.add_argument("--standin", action="store_true", help="the runs used stand-in data: say so in the titles")
    parser.add_argument("--findings", help="a markdown file of what was found: headings, paragraphs, bullets")
    parser.add_argument("--publish", metavar="DEST", help="instead of a report: copy the one run folder given to DEST "
                                                          "for sharing (no training state, no paths; a default "
                                                          "run keeps its policies and one video)")
    args = parser.parse_args(argv)
    if args.publish:
        if len(args.runs) != 1:
            raise SystemExit("error: --publish copies one run folder: give one")
        run = load_run(args.runs[0])
        unfinished = run.run.publish(args.publish, policies=setting(run) == PERCENTILE_SETTINGS[0])
        print(f"wrote {args.publish}" + (f" (left out, not finished: {', '.join(unfinished)})" if unfinished else ""))
        return
    if args.findings and not Path(args.findings).is_file():
        raise SystemExit(f"error: --findings {args.findings}: no such file")
    folders = dict.fromkeys(map(os.path.abspath, expand_sweeps(args.runs)))  # a run named twice counts once
    runs = [load_run(path) for path in folders]  # every folder checked before anything is written
    out = args.out or new_stem(str(Path("runs") / "report"))
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --out under a file
        raise SystemExit(f"error: --out {out}: {e.filename}: {e.strerror}: give a path in a folder") from None
    try:
        paths = write_report(runs, out, args.standin, args.findings)
    except (RunError, utils.WriteError) as e:  # a damaged file of a run; an output that cannot be written
        raise SystemExit(f"error: {e}") from None
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
