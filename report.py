"""Gather finished runs into one report: report.pdf (typeset with typst) and its markdown twin report.md.

    python report.py runs/<date>/<time> [runs/<date>/<time> ...] --standin --out gallery/report
    python report.py runs/<date>/<time>-sweep                     # a study's job folders: a table and figure per task
    python report.py ... --datasets gallery/dataset_returns.png --findings gallery/findings.md
    python report.py runs/<date>/<time> --publish gallery/hopper-medium   # a run folder to share (see publish)

The report holds: the results table against the assignment's bars and the DT paper; each run's settings (its
overrides of cfgs/); each run's figure; the datasets' return histograms (--datasets); each run's return-to-go sweep
(evaluate.py's sweep_final.csv/png); each study (runs of one task whose configs differ: the score per setting
beside the default one, with what the numbers say); and the findings (--findings: a markdown file of
headings, paragraphs and bullet lists; its "## In short" section opens the report, the rest closes it). It names
runs by <date>/<time>, never by a path of the machine.
"""
import argparse
import json
import math
import os
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

import utils
from cfgs import schema

plt = utils.pyplot()
ENV_CONFIGS = Path(__file__).resolve().parent / "cfgs" / "env"  # assignment_bar, dt_paper_score per dataset
RESULT_COLUMNS = ["run", "env-dataset", "seeds", "final score", "best eval (step)", "bar", "pass", "DT paper"]
NOT_COMPARED = ("resume", "env.assignment_bar", "env.dt_paper_score")  # bookkeeping; what the report compares with
NOT_A_SETTING = NOT_COMPARED + ("seeds", "buffer.file", "device", "eval.video", "logger", "wandb.")  # of a study


# ---------------------------------------------------------------------------------------------
# Run folders


def load_run(path):
    """A run folder -> its label, flat config, summary and seed folders; SystemExit if it is not a finished run."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise SystemExit(f"error: {path}: no such folder")
    missing = [name for name in ("config.yaml", "summary.json") if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(f"error: {path}: no {' and no '.join(missing)} there; "
                         "give a run folder that main.py has finished (it writes both)")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {run_dir / 'summary.json'} is empty or not JSON ({e}): python main.py "
                         f"resume={path} writes it again") from None
    config, cfg = schema.upgrade(OmegaConf.load(run_dir / "config.yaml")), None
    try:  # in today's keys, so that runs of older code differ only where their settings do
        cfg = schema.typed(config)
        config = OmegaConf.to_container(cfg, resolve=True)
    except (schema.ConfigError, OmegaConfBaseException):
        cfg = None
    for key in ("file", "path"):  # the file's name: its folder is the machine's, not the run's
        if config.get("buffer", {}).get(key):
            config["buffer"][key] = Path(config["buffer"][key]).name
    run_dir = Path(os.path.abspath(run_dir))
    return {"dir": run_dir, "label": "/".join(run_dir.parts[-2:]), "config": flatten(config), "cfg": cfg,
            "summary": summary, "seed_dirs": sorted(run_dir.glob("seed*"))}


def expand_sweeps(paths):
    """A multirun's runs/<date>/<time>-sweep folder stands for its job folders 0, 1, ... (each a run)."""
    expanded = []
    for path in map(Path, paths):
        jobs = sorted((d for d in path.glob("*") if d.name.isdigit() and (d / "config.yaml").is_file()),
                      key=lambda d: int(d.name)) if path.is_dir() and not (path / "config.yaml").exists() else []
        expanded += jobs or [path]
    return expanded


def flatten(tree, prefix=""):
    """Nested dicts -> {"dotted.key": value}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def on_d4rl_scale(run):
    """A run on D4RL files in the assignment's -v4 envs: its score compares with the bars and the DT paper."""
    return run["config"].get("buffer.source", "d4rl") == "d4rl" and run["config"].get("env.id", "-v4").endswith("-v4")


def task(run):
    """env-dataset, and the source and env when the score is not on D4RL's scale (Minari, -v5 envs)."""
    name = f"{run['summary']['env']}-{Path(run['summary']['dataset']).stem}"
    if on_d4rl_scale(run):
        return name
    return f"{name} ({run['config'].get('buffer.source')}, {run['config'].get('env.id')})"


def env_facts(env):
    path = ENV_CONFIGS / f"{env}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}


def seed_curve(run, csv_name, key):
    """steps, mean over seeds of column `key` of seed*/csv_name; None if no seed has it."""
    tables = [utils.read_csv(d / csv_name) for d in run["seed_dirs"]]
    curve = utils.mean_std_over_seeds([t for t in tables if key in t], key)
    return None if curve is None else curve[:2]


def score_text(scores):
    """'60.0 ± 1.6' over seeds; no std over one seed."""
    return f"{np.mean(scores):.1f}" + (f" ± {np.std(scores):.1f}" if len(scores) > 1 else "")


# ---------------------------------------------------------------------------------------------
# The results table


def seeds_text(summary):
    """The seeds column: the seeds that finished, and those missing named as seeds."""
    finished, missing = (", ".join(map(str, summary[key])) for key in ("seeds", "missing_seeds"))
    return (finished or "none finished") + (f"; missing seeds {missing}" if missing else "")


def nan_seeds(summary):
    """The seeds whose final score is not a finite number (a NaN run never passes or fails a bar)."""
    return [f["seed"] for f in summary["per_seed"] if not math.isfinite(f["score_mean"])]


def result_row(run):
    """The run's row of the results table, as strings."""
    summary, env = run["summary"], run["summary"]["env"]
    dataset = Path(summary["dataset"]).stem  # a buffer.path file shows as its name
    seeds = seeds_text(summary)
    episodes = sorted({f["episodes"] for f in summary["per_seed"]})
    score = summary["score_mean"]
    final = "n/a" if score is None else f"{score_text(finals([run]))} ({'/'.join(map(str, episodes))} ep)"
    best = seed_curve(run, "eval.csv", "score_mean")
    best = "n/a" if best is None else f"{best[1].max():.1f} ({best[0][best[1].argmax()]:.0f})"
    facts = env_facts(env) if on_d4rl_scale(run) else {}  # Minari's or -v5's scores are not D4RL's
    bar = facts.get("assignment_bar", {}).get(dataset)
    paper = facts.get("dt_paper_score", {}).get(dataset)
    if nan_seeds(summary):
        passes = f"NaN score (seeds {', '.join(map(str, nan_seeds(summary)))})"
    elif bar is None or score is None:
        passes = "-"
    elif len(summary["seeds"]) < 3:  # the bar is on the mean of 3 seeds
        passes = f"n/a ({len(summary['seeds'])} seed{'s' if len(summary['seeds']) > 1 else ''})"
    else:
        passes = "yes" if score > bar else "no"
    return [run["label"], task(run), seeds, final, best, "-" if bar is None else f"> {bar:g}", passes,
            "-" if paper is None else f"{paper:.1f}"]


def config_differences(runs):
    """Rows [key, value in run 1, value in run 2, ...] for the config keys whose values differ (not resume and
    the env's bars and paper scores)."""
    keys = sorted(k for k in set().union(*(run["config"] for run in runs)) if not k.startswith(NOT_COMPARED))
    rows = [[key, *(str(run["config"].get(key, "(absent)")) for run in runs)] for key in keys]
    return [row for row in rows if len(set(row[1:])) > 1]


def loss_figure(runs):
    """Training loss of every run (mean over seeds) on one log-scale axis."""
    fig, ax = plt.subplots(figsize=(13, 5))
    for i, run in enumerate(runs):
        curve = seed_curve(run, "train.csv", "action_mse") or seed_curve(run, "train.csv", "loss")
        if curve is not None:  # past the 10 colours, the next dash: no two runs draw alike
            ax.plot(*curve, linestyle=("-", "--", ":", "-.")[i // 10 % 4], label=f"{run['label']} ({task(run)})")
    ax.set(xlabel="training step", ylabel="action MSE (mean over seeds)", yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the axis, off the curves
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The return-to-go sweep (evaluate.py) and the studies


def sweep_summary(run):
    """A run's sweep_final.csv as rows [target score, achieved score] and what it shows; None without one."""
    rows = utils.read_csv(run["dir"] / "sweep_final.csv")
    if not rows:
        return None
    ref_min, ref_max = run["config"]["env.ref_min_score"], run["config"]["env.ref_max_score"]
    targets = np.unique(rows["target"])
    per_seed = [[rows["score"][(rows["target"] == t) & (rows["seed"] == s)].mean() for s in np.unique(rows["seed"])]
                for t in targets]  # (targets, seeds): each seed's mean over its episodes
    target_scores = utils.normalized_score(targets, ref_min, ref_max)
    means = np.array([np.mean(p) for p in per_seed])
    best = int(means.argmax())
    seeds = len(per_seed[0])
    episodes = len(rows["score"]) // (len(targets) * seeds)
    table = [[f"{t:g}", f"{ts:.1f}", score_text(p)] for t, ts, p in zip(targets, target_scores, per_seed)]
    below = target_scores <= means.max()  # where the achieved score could still follow the target
    slope = np.polyfit(target_scores[below], means[below], 1)[0] if below.sum() >= 2 else float("nan")
    text = (f"{run['label']} ({task(run)}, {seeds} seed{'s' * (seeds > 1)}, {episodes} episodes per target and "
            f"seed): the achieved score goes from {means[0]:.1f} at the lowest target ({target_scores[0]:.1f}) "
            f"to {means[-1]:.1f} at the highest ({target_scores[-1]:.1f}); the best, {means[best]:.1f}, at target "
            f"{targets[best]:g} (normalized {target_scores[best]:.1f}). Over the targets up to that best score, "
            f"the achieved score changes by {slope:+.2f} points per point of target (1 would follow it exactly).")
    return table, text


def defaults():
    """The default value of every config key (the schema's dataclasses; env's keys have none)."""
    return flatten(OmegaConf.to_container(OmegaConf.structured(schema.Config)))


# The value a default of `auto` (resolved at start) counts as: the gallery reference runs' (bf16 on the project's CPU)
AUTO_REFERENCE = {"train.precision": "bf16"}


def is_default(run, keys, default):
    return all(run["config"].get(k) == (AUTO_REFERENCE.get(k) if default.get(k) == "auto" else default.get(k))
               for k in keys)


def changed(run, keys, default):
    """The keys among `keys` where the run's value is not the default."""
    return [k for k in keys if not is_default(run, [k], default)]


def setting_name(run, keys, default):
    """The default setting by all its values; any other by the values where it differs from the default."""
    shown = keys if is_default(run, keys, default) else changed(run, keys, default)
    return ", ".join(f"{k}={run['config'].get(k)}" for k in shown)


def overrides(run, default):
    """The run's settings as overrides of cfgs/, as main.py takes them: 'env=hopper train.lr=0.0003'."""
    config = run["config"]
    default = {**default, **flatten({"env": env_facts(config.get("env.name"))}),
               "eval.target_return": config.get("env.target_return")}  # cfgs/: ${env.target_return}
    keys = [k for k in config if k != "env.name" and not k.startswith(NOT_A_SETTING)]
    return " ".join([f"env={config.get('env.name')}", *(f"{k}={config[k]}" for k in changed(run, keys, default))])


def studies(runs):
    """Runs of one task whose configs differ: [(task, keys, [(setting, runs)], default setting or None)].

    Runs with the same setting are pooled: their seeds count together.
    """
    found, default = [], defaults()
    for name in dict.fromkeys(task(r) for r in runs):
        members = [r for r in runs if task(r) == name]
        keys = [row[0] for row in config_differences(members) if not row[0].startswith(NOT_A_SETTING)]
        if len(members) < 2 or not keys:
            continue
        settings = {}
        for run in members:
            settings.setdefault(setting_name(run, keys, default), []).append(run)
        baseline = next((s for s, rs in settings.items() if is_default(rs[0], keys, default)), None)
        found.append((name, keys, list(settings.items()), baseline))
    return found


def finals(runs):
    """The final scores of every seed of `runs`."""
    return [f["score_mean"] for run in runs for f in run["summary"]["per_seed"]]


def study_table(settings, baseline):
    base = finals(dict(settings)[baseline]) if baseline else []
    rows = []
    for setting, runs in settings:
        scores = finals(runs)
        delta = "-" if not base or setting == baseline or not scores else f"{np.mean(scores) - np.mean(base):+.1f}"
        rows.append([setting + (" (default)" if setting == baseline else ""), ", ".join(r["label"] for r in runs),
                     str(len(scores)), score_text(scores) if scores else "n/a", delta,
                     ", ".join(f"{s:.1f}" for s in scores)])
    return rows


def study_findings(settings, baseline):
    """One sentence per setting against the default: the difference and whether it exceeds the seeds' spread."""
    base = finals(dict(settings)[baseline]) if baseline else []
    if not base:
        return ["No run has the default setting: nothing to compare with."]
    lines = []
    for setting, runs in settings:
        scores = finals(runs)
        if setting == baseline or not scores:
            continue
        delta, spread = np.mean(scores) - np.mean(base), np.std(scores) + np.std(base)
        if min(len(scores), len(base)) < 2:
            verdict = "one seed on a side: no spread to judge it by"
        elif abs(delta) > spread:
            verdict = f"{'better' if delta > 0 else 'worse'}, beyond the seeds' spread ({spread:.1f})"
        else:
            verdict = f"within the seeds' spread ({spread:.1f}): no clear effect"
        lines.append(f"{setting}: {score_text(scores)} against {score_text(base)} for the default, "
                     f"{delta:+.1f}: {verdict}.")
    return lines


def study_figure(found):
    """Per task, the final score of each setting (seeds as dots, mean ± std as a bar), the default in grey."""
    labels = [[textwrap.fill(s, 45, break_long_words=False, break_on_hyphens=False) for s, _ in settings]
              for _, _, settings, _ in found]
    heights = [1.4 + 0.2 * sum(label.count("\n") + 2 for label in panel) for panel in labels]  # (inches)
    fig, axes = plt.subplots(len(found), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, keys, settings, baseline), panel in zip(axes[:, 0], found, labels):
        for y, (setting, runs) in enumerate(settings):
            scores = finals(runs)
            if not scores:
                continue
            color = "gray" if setting == baseline else "C0"
            ax.barh(y, np.mean(scores), xerr=np.std(scores) if len(scores) > 1 else None, color=color, alpha=0.5)
            ax.plot(scores, [y] * len(scores), "o", color=color, markersize=4)
        bar = env_facts(name.split("-")[0]).get("assignment_bar", {}).get(name.split("-", 1)[1])
        if bar is not None:
            ax.axvline(bar, color="C3", linestyle="--", linewidth=1, label=f"assignment bar {bar:g}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_yticks(range(len(settings)), panel, fontsize=8)
        ax.set(xlabel="final normalized score (seeds as dots, mean ± std)")
        ax.set_title(textwrap.fill(f"{name}: {', '.join(keys)}", 70), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The document: blocks, rendered to markdown and to typst


def heading(level, text):
    return ("heading", level, text)


def paragraph(text):
    return ("paragraph", text)


def bullets(items):
    return ("bullets", list(items))


def table(header, rows):
    return ("table", header, rows)


def image(path, caption):
    return ("image", Path(path), caption)


def titles(standin):
    """The report's title and the results table's heading."""
    label = " (stand-in data)" if standin else ""
    return f"Decision Transformer on D4RL MuJoCo{label}", f"Results{label}"


def notes(standin):
    """The lines that say what the numbers are."""
    lines = ["final score: D4RL normalized score of each seed's final evaluation (ep = episodes per seed), "
             "mean ± std over seeds.",
             "best eval: the highest periodic evaluation score (mean over seeds) and its training step.",
             "bar: the assignment's bar on the final score's mean over 3 seeds (n/a with fewer seeds). "
             "DT paper: Chen et al. 2021, Table 2."]
    if standin:
        lines.append("These scores are on stand-in data, not the D4RL datasets: they are labelled stand-in.")
    else:
        lines.append("Scores on stand-in data (not the D4RL datasets) must be labelled stand-in: use --standin.")
    return lines


SUMMARY_HEADING = "In short"  # the findings' section that opens the report


def read_findings(path):
    """A markdown file of '## headings', paragraphs and '- ' bullet lists -> blocks."""
    blocks, lines = [], Path(path).read_text().splitlines() + [""]
    text, items = [], []
    for line in lines:
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


def split_summary(blocks):
    """The findings' "## In short" section (it opens the report) and the other blocks (they close it)."""
    start = next((i for i, block in enumerate(blocks) if block == heading(2, SUMMARY_HEADING)), None)
    if start is None:
        return [], blocks
    end = next((i for i in range(start + 1, len(blocks)) if blocks[i][0] == "heading" and blocks[i][1] <= 2),
               len(blocks))
    return blocks[start:end], blocks[:start] + blocks[end:]


def document(runs, standin, figures, datasets_png=None, findings=None):
    """The report's blocks. figures: {"loss": png, "study": png or None}."""
    title, heading_text = titles(standin)
    summary, found_blocks = split_summary(read_findings(findings)) if findings else ([], [])
    blocks = [heading(1, title)]
    if standin:
        blocks.append(paragraph("Every score here is on stand-in datasets made by D4RL's protocol in gymnasium's -v4 "
                                "envs, not on the D4RL release: they compare with D4RL's in spirit, not number for "
                                "number."))
    blocks += summary
    blocks += [heading(2, heading_text), table(RESULT_COLUMNS, [result_row(r) for r in runs]), bullets(notes(standin))]
    default = defaults()
    blocks += [heading(2, "Settings of each run"),
               paragraph("Each run's overrides of the defaults in cfgs/ (the DT paper's), as python main.py takes "
                         "them; every value a run used is in its config.yaml, and python main.py --config-path "
                         "<run folder> --config-name config trains it again."),
               table(["run", "overrides of cfgs/"], [[r["label"], overrides(r, default)] for r in runs])]
    blocks += [heading(2, "Training"), image(figures["loss"], "Training loss (action MSE), mean over seeds.")]
    blocks += [image(r["dir"] / "results.png", f"{r['label']} ({task(r)}): evaluation return and normalized score "
                                               f"over training (mean ± std over seeds), and the losses.")
               for r in runs if (r["dir"] / "results.png").exists()]
    if datasets_png:
        blocks += [heading(2, "The datasets' returns"),
                   image(datasets_png, "Trajectory returns of each dataset file on the normalized-score axis, with "
                                       "the behaviour mean and the env's default target.")]
    swept = [(r, sweep_summary(r)) for r in runs]
    swept = [(r, s) for r, s in swept if s is not None]
    if swept:
        blocks.append(heading(2, "Does the return follow the target? (evaluate.py)"))
        for run, (rows, text) in swept:
            blocks += [paragraph(text), table(["target return", "target (normalized)", "achieved (normalized)"], rows)]
            if (run["dir"] / "sweep_final.png").exists():
                blocks.append(image(run["dir"] / "sweep_final.png", f"{run['label']}: achieved against target, "
                                                                    f"mean ± std over seeds."))
    found = studies(runs)
    if found:
        blocks += [heading(2, "Studies"),
                   paragraph("Each study gathers one task's runs whose configs differ in the keys of its heading. "
                             "The default setting is named by all its values, any other by the values where it "
                             "differs from the default; runs of one setting pool their seeds.")]
        for name, keys, settings, baseline in found:
            blocks += [heading(3, f"{name}: {', '.join(keys)}"),
                       table(["setting", "run", "seeds", "final score", "vs default", "seeds' scores"],
                             study_table(settings, baseline)),
                       bullets(study_findings(settings, baseline))]
        blocks.append(image(figures["study"], "Final score per setting: seeds as dots, mean ± std as bars, the "
                                              "default setting in grey."))
    return blocks + found_blocks


def markdown(blocks, here):
    """The blocks as markdown; images linked relative to the report's folder `here`."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "paragraph":
            out.append(block[1])
        elif kind == "bullets":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("\n".join([f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
                                  *(f"| {' | '.join(r)} |" for r in rows)]))
        elif kind == "image":
            out.append(f"![{block[2]}]({Path(os.path.relpath(os.path.abspath(block[1]), here)).as_posix()})")
    return "\n\n".join(out) + "\n"


def typst_text(text):
    """Plain text for typst markup: its special characters escaped."""
    return re.sub(r"([\\#$*_@<>\[\]`~=/-])", r"\\\1", str(text))


def typst_inline(text):
    """Markdown-ish text for typst: `code` spans as raw text, **bold** as strong, the rest escaped."""
    parts = re.split(r"(`[^`]+`|\*\*[^*]+\*\*)", str(text))
    return "".join(part if part.startswith("`") else f"*{typst_text(part[2:-2])}*" if part.startswith("**")
                   else typst_text(part) for part in parts)


def breakable(text):
    """Table cell text that may break after . / _ = (zero-width spaces), so long names wrap inside the cell."""
    return re.sub(r"([./_=])", "\\1\u200b", str(text))


MARGIN_CM, TEXT_WIDTH_CM = 1.8, 21.0 - 2 * 1.8  # on A4
FIGURE_HEIGHT_CM = 19.0  # a figure's tallest: with its caption and a heading it fits a page (26.1 cm of text)


def figure_width(path):
    """The share of the text width at which a figure is at most FIGURE_HEIGHT_CM tall (tall ones fit a page)."""
    with Image.open(path) as png:
        width, height = png.size
    return min(1.0, FIGURE_HEIGHT_CM * width / height / TEXT_WIDTH_CM)


def typst(blocks, images):
    """The blocks as a typst document; images: {png path: name in the build folder}."""
    out = [f'#set page(paper: "a4", margin: {MARGIN_CM}cm, numbering: "1")', '#set text(size: 9.5pt)',
           '#set par(justify: true)', '#show table.cell.where(y: 0): strong']
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            out.append(f"{'=' * block[1]} {typst_text(block[2])}")
        elif kind == "paragraph":
            out.append(typst_inline(block[1]))
        elif kind == "bullets":
            out.append("\n".join(f"- {typst_inline(item)}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            cells = ", ".join(f"[{typst_text(breakable(c))}]" for r in [header, *rows] for c in r)
            out.append(f"#table(columns: {len(header)}, inset: 4pt, stroke: 0.4pt + gray, {cells})")
        elif kind == "image":
            out.append(f'#figure(image("{images[block[1]]}", width: {figure_width(block[1]):.0%}), '
                       f'caption: [{typst_text(block[2])}])')
    return "\n\n".join(out) + "\n"


def compile_pdf(blocks):
    """The typst document of the blocks compiled to PDF bytes, its images copied beside it (no machine paths)."""
    import typst as typst_compiler
    with tempfile.TemporaryDirectory() as build:
        paths = list(dict.fromkeys(b[1] for b in blocks if b[0] == "image"))
        images = {path: f"figure{i}.png" for i, path in enumerate(paths)}
        for path, name in images.items():
            shutil.copyfile(path, Path(build, name))
        Path(build, "report.typ").write_text(typst(blocks, images))
        return typst_compiler.compile(str(Path(build, "report.typ")), root=build)


def write_report(runs, out, standin=False, datasets_png=None, findings=None):
    """Write <out>.pdf, <out>.md, <out>_loss.png (and <out>_study.png for studies), each atomically."""
    pdf_path, md_path = Path(f"{out}.pdf"), Path(f"{out}.md")
    figures = {"loss": utils.save_png(loss_figure(runs), Path(f"{out}_loss.png")), "study": None}
    found = studies(runs)
    if found:
        figures["study"] = utils.save_png(study_figure(found), Path(f"{out}_study.png"))
    blocks = document(runs, standin, figures, datasets_png, findings)
    utils.atomic_write_bytes(pdf_path, compile_pdf(blocks))
    utils.atomic_write_bytes(md_path, markdown(blocks, os.path.abspath(md_path.parent)).encode())
    return [pdf_path, md_path, *(p for p in figures.values() if p)]


NOT_PUBLISHED = ("last.pt", "best.pt", "submitit_job", "MUJOCO_LOG.TXT")  # training state, a job id, MuJoCo's log


def publish(run, dest):
    """Copy a run folder to share: final.pt but not last.pt or best.pt, this machine's paths made relative
    (results.png drawn again); no unfinished seeds, tracker logs or MuJoCo's own log. Returns the seeds left
    out."""
    run_dir, root = run["dir"], Path(__file__).resolve().parent
    local = [(os.path.realpath(root / "runs") + "/", "runs/"), (str(root) + "/", ""), (str(root.parent) + "/", "../")]
    dest = Path(dest)
    if dest.exists():
        raise SystemExit(f"error: --publish {dest}: exists already; give a new folder")
    unfinished = [d.name for d in run["seed_dirs"] if not (d / "final.json").is_file()]
    if unfinished and len(unfinished) == len(run["seed_dirs"]):
        raise SystemExit(f"error: --publish {run_dir}: no seed has finished (no final.json); resume it first")
    for path in sorted(Path(run_dir).rglob("*")):
        relative = path.relative_to(run_dir)
        left_out = (path.name in NOT_PUBLISHED or relative.parts[0] in unfinished
                    or path.name.startswith("events.out.tfevents")
                    or any(part.startswith(".") or part == "wandb" for part in relative.parts))  # .hydra/ of old runs
        if path.is_dir() or left_out:
            continue
        data = path.read_bytes()
        if path.suffix in (".yaml", ".log", ".json", ".csv", ".md", ".txt"):
            text = data.decode()
            for machine, shared in local:
                text = text.replace(machine, shared)
            data = text.encode()
        utils.atomic_write_bytes(dest / relative, data)
    cfg = run["cfg"]
    if cfg is not None:  # drawn again: without unfinished seeds, and titled without this machine's paths
        utils.plot_results(dest, f"{utils.run_title(cfg)}   ({run['label']})", cfg.eval.target_return,
                           cfg.env.ref_min_score, cfg.env.ref_max_score)
    else:  # a config of unknown keys: no figure, rather than a copy with unfinished seeds or the machine's paths
        (dest / "results.png").unlink(missing_ok=True)
    return unfinished


def new_stem(stem):
    """stem, or stem-1, stem-2, ...: the first whose outputs are all new files (nothing of the user's is replaced)."""
    taken = lambda s: any(Path(f"{s}{end}").exists() for end in (".pdf", ".md", "_loss.png", "_study.png"))  # noqa
    return next(s for s in (f"{stem}-{i}" if i else stem for i in range(10_000)) if not taken(s))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders runs/<date>/<time> made by main.py or main_mp.py")
    parser.add_argument("--out", help="path stem of the outputs: <out>.pdf, <out>.md, <out>_loss.png (default: "
                                      "report, or report-1, report-2, ... where those files exist)")
    parser.add_argument("--standin", action="store_true", help="the runs used stand-in data: say so in the titles")
    parser.add_argument("--datasets", help="a figure of the datasets' returns (python buffer.py --out ...)")
    parser.add_argument("--findings", help="a markdown file of what was found: headings, paragraphs, bullets")
    parser.add_argument("--publish", metavar="DEST", help="instead of a report: copy the one run folder given to DEST "
                                                          "for sharing (final.pt kept; no last.pt, best.pt, paths)")
    args = parser.parse_args(argv)
    if args.publish:
        if len(args.runs) != 1:
            raise SystemExit("error: --publish copies one run folder: give one")
        unfinished = publish(load_run(args.runs[0]), args.publish)
        print(f"wrote {args.publish}" + (f" (left out, not finished: {', '.join(unfinished)})" if unfinished else ""))
        return
    for option, path in (("--datasets", args.datasets), ("--findings", args.findings)):
        if path and not Path(path).is_file():
            raise SystemExit(f"error: {option} {path}: no such file")
    runs = [load_run(path) for path in expand_sweeps(args.runs)]  # every folder checked before anything is written
    for path in write_report(runs, args.out or new_stem("report"), args.standin, args.datasets, args.findings):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
