"""report.pdf: a short paper from finished run folders. The answers and the data first, one results table, a figure
for each question of the assignment, the method; every run's curves, settings, data and command in an appendix.

    python report.py gallery/*/ --standin --findings gallery/findings.md --machines gallery/machines.yaml \\
        --out gallery/report
    python report.py runs/<date>/<time>-sweep                     # a study: the sweep folder stands for its jobs
    python report.py runs/<date>/<time> --publish gallery/<name>  # instead: copy one run folder to share

Runs are grouped by task and named by their setting in words (tools/runs.py), each setting compared with its task's
default trained at the same precision on the same machine; the findings' numbers are filled from the runs.
"""
import argparse
import glob
import os
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

import utils
from plumbing.runfolder import Run, RunError
from tools import figures, findings, stats, typeset
from tools import runs as finished
from tools.runs import DEFAULT, QUESTIONS

OPENING = ("In short", "The data", "Limitations")  # the findings' sections that open the report
DT_PAPER = "Chen et al. 2021, Table 2"  # a citation: its numbers are not results
n = stats.number


def statistics_text(runs: list) -> str:
    """What the numbers are: the spread, the trend test, the difference test and what it holds fixed."""
    episodes = sorted({run.config.get("eval.final_episodes") for run in runs})
    return (f"Final score: the D4RL normalized score ({n(0, 0)}: random, {n(100, 0)}: expert) of each seed's final "
            f"evaluation ({' or '.join(n(e, 0) for e in episodes)} episodes), mean ± sample std over seeds "
            f"(ddof = {n(1, 0)}), default config. DT paper: {DT_PAPER} (on D4RL's data). Data: the normalized "
            f"returns of the dataset file's trajectories. Trend: \"still rising\" where the least-squares slope of "
            f"each seed's last {n(stats.LAST_EVALS, 0)} periodic evals is positive at one-sided p < "
            f"{n(1 - stats.CONFIDENCE, 2)}. A difference between two settings is claimed only where its "
            f"{n(stats.CONFIDENCE * 100, 0)}% Welch interval over seeds excludes {n(0, 0)}, each setting's seed "
            f"variance taken at least as large as its final evaluation's own (episode variance / episodes); a "
            f"setting is compared with its task's default trained at the same precision on the same machine, or "
            f"marked where there is none.")


def protocol(grouped: dict, kinds: dict) -> str:
    """How the runs trained, from their configs: the default's hyperparameters, the targets, precision and machine."""
    every = [r for s in grouped.values() for rs in s.values() for r in rs]
    defaults = [rs[0] for s in grouped.values() if (rs := s.get(DEFAULT))] or every[:1]
    c = defaults[0].config
    targets = {run.config["env.name"]: run.config["eval.target_return"] for run in defaults}
    conditions = Counter(f"{run.config.get('train.precision')} on "
                         f"{kinds.get(run.machine, 'a machine not named (report.py --machines)')}" for run in every)
    return (f"Protocol, from the runs' config.yaml: the default config trains {n(c['train.steps'], 0)} steps of "
            f"batch {n(c['train.batch_size'], 0)}, AdamW at {n(c['train.lr'], None)} (weight decay "
            f"{n(c['train.weight_decay'], None)}) after {n(c['train.warmup_steps'], 0)} warm-up steps, a context of "
            f"K = {n(c['buffer.context_len'], 0)} steps, {n(c['model.n_layers'], 0)} layers of "
            f"{n(c['model.n_heads'], 0)} head, width {n(c['model.embed_dim'], 0)}, dropout "
            f"{n(c['model.dropout'], None)}. Each seed's final evaluation conditions on its env's target return ("
            + ", ".join(f"{env} {n(target, 0)}" for env, target in targets.items()) + "). Trained: "
            + "; ".join(f"{n(k, 0)} run{'s' * (k != 1)} in {where}" for where, k in conditions.items()) + ".")


def question_text(found: list) -> str:
    """Which differences the intervals show, how many they do not, and how large one had to be to be seen."""
    tested = [(c, finished.compare(c.runs, c.base)) for c in found]
    shown = [f"{c.task}, {c.setting}: {stats.difference_text(d)}" + (f" ({c.note})" if c.note else "")
             for c, d in tested if stats.shown_by_interval(d)]
    halves = [d[1] for _, d in tested if d is not None]
    others = [f"{c.task}, {c.setting} ({c.note})" for c in found if c.note]
    return (f"Read: a dot is a seed, a short line its baseline's mean. A difference whose "
            f"{n(stats.CONFIDENCE * 100, 0)}% interval excludes {n(0, 0)} (difference ± half-width): "
            f"{'; '.join(shown) or 'none'}; not shown: {n(len(found) - len(shown), 0)} other setting-task pairs. "
            + (f"With these seeds a difference had to exceed {n(min(halves))} to {n(max(halves))} points to be "
               f"seen. " if halves else "")
            + (f"Hatched, trained at another precision or machine than the task's default: {'; '.join(others)}."
               if others else ""))


def seeds_left_out(runs: list) -> str:
    """' (missing seeds: day/run: 2; NaN score: day/run: 0)', or ''."""
    missing = [f"{r.label}: {', '.join(n(s, 0) for s in r.summary['missing_seeds'])}" for r in runs
               if r.summary.get("missing_seeds")]
    nan = [f"{r.label}: {', '.join(n(s, 0) for s in r.nan_seeds())}" for r in runs if r.nan_seeds()]
    parts = [f"{what}: {'; '.join(found)}" for what, found in (("missing seeds", missing), ("NaN score", nan)) if found]
    return f" ({'; '.join(parts)})" if parts else ""


def results(runs: list, grouped: dict, data: dict, label: str) -> list:
    """The results table (a row per task's default, else per setting), on D4RL's scale and another; what's left out."""
    rows = {True: [], False: []}  # on D4RL's scale, on another
    for name, settings in grouped.items():
        shown = {"": settings[DEFAULT]} if DEFAULT in settings else settings
        for setting_name, members in shown.items():
            values, (bar, paper) = finished.scores(members), members[0].bar_and_paper()
            passed = "-" if bar is None else f"> {n(bar, None)}: " + (
                ("yes" if np.mean(values) > bar else "no") if len(values) >= 3 else
                f"n/a ({n(len(values), 0)} seed{'s' * (len(values) != 1)})")
            returns = data.get(name, (None,))[0]
            rows[members[0].on_d4rl_scale].append([
                name + finished.shared_text(settings) + (f", {setting_name}" if setting_name else ""),
                stats.score_text(values), stats.seeds_text(values), passed, n(paper),
                "-" if returns is None else n(returns.mean()), "-" if returns is None else n(returns.max()),
                finished.trend(members)])
    header = ["task", "final score", "seeds' scores", "bar (3-seed mean)", "DT paper (D4RL)", "data: mean",
              "data: best", "trend"]
    blocks = [("heading", 2, f"Results{label}"), ("table", header, rows[True]), ("paragraph", statistics_text(runs))]
    if rows[False]:
        blocks += [("paragraph", "On other scales (-v5 envs): not comparable with the table above, the bars or the "
                                 "DT paper."), ("table", header, rows[False])]
    blocks += [("paragraph", s) for s in finished.different_files(runs)]
    if nan := [f"{r.label} (seed {', '.join(n(s, 0) for s in r.nan_seeds())})" for r in runs if r.nan_seeds()]:
        blocks.append(("paragraph", f"A NaN or inf final score, left out of every number here (its main.log says "
                                    f"why): {'; '.join(nan)}."))
    return blocks


def question_figures(grouped: dict, data: dict, out: str) -> list:
    """The main part's figures as <out>_<name>.png, each with a caption that says what to see in it."""
    defaults = {name: rs[0] for name, s in grouped.items() if (rs := s.get(DEFAULT))}
    bars = {name: run.bar_and_paper()[0] for name, run in defaults.items()}
    medium = {name: (run.curve("eval", "score_mean"), run.curve("train", "action_mse") or run.curve("train", "loss"),
                     bars[name]) for name, run in defaults.items() if name.endswith("-medium")}
    sweeps = {name: rows for name, run in defaults.items() if (rows := run.sweep_rows()) is not None}
    episodes = n(next(iter(next(iter(grouped.values())).values()))[0].config.get("eval.episodes"), 0)
    shown = []
    if medium:
        shown.append(("training", figures.training(medium), (
            f"The default runs on the medium datasets: eval score ({episodes} episodes per eval, mean ± std over "
            f"seeds) and the action loss over training. See: whether the score levels off before the last step, and "
            f"where it ends against the assignment's bar (dashed).")))
    if data:
        shown.append(("datasets", figures.datasets({k: v[0] for k, v in data.items()}, bars), (
            "The datasets: each trajectory's normalized return. See: where the assignment's bar (solid) lies against "
            "the data's mean (dotted) and best trajectory (dashed): a bar above most trajectories asks the policy to "
            "do better than most of the data it imitates.")))
    if sweeps:
        shown.append(("sweep", figures.sweep(sweeps, {k: data[k][0].max() for k in sweeps if k in data}), (
            "Does the achieved return follow the target return-to-go? Each default run's policies conditioned on a "
            "sweep of targets (python evaluate.py run=<run>), mean ± std over seeds. See: where the curve leaves the "
            "line achieved = target and levels off, against the data's best trajectory (dotted).")))
    questions = {"percentile": "Does percentile behaviour cloning help? DT and plain BC (the same network, its "
                               "return-to-go zeroed) on all the data or its top trajectories by return; bars: mean "
                               "over seeds. ",
                 "aux": "Do auxiliary next-state and return-to-go losses help? Bars: mean over seeds. ",
                 "course": "Does a change to the course of training keep an early peak of the eval score in the "
                           "policy at the last step (a moving average of the weights, a learning rate decaying after "
                           "the warm-up, more dropout, a shorter warm-up)? Bars: mean over seeds. "}
    for key, (keys, names) in QUESTIONS.items():
        if found := finished.comparisons(grouped, keys, names):
            heights = {}  # {task: {setting: (scores, its baseline's mean, other condition?)}}, the default's first
            for c in found:
                default = finished.scores(grouped[c.task][DEFAULT])
                heights.setdefault(c.task, {names[0]: (default, np.mean(default), False)})
                heights[c.task][c.setting] = (finished.scores(c.runs), np.mean(finished.scores(c.base)), bool(c.note))
            shown.append((key, figures.bars(heights, names), questions[key] + question_text(found)))
    return [("image", utils.save_png(fig, f"{out}_{name}.png", typeset.DPI), caption) for name, fig, caption in shown]


def appendix(grouped: dict, out: str) -> list:
    """Each task's settings: scores against their default, trend, data, command; their curves (<out>_runs<i>.png)."""
    blocks = [("pagebreak",), ("heading", 1, "Appendix: every run"),
              ("paragraph", "Each task's runs by setting (runs of one setting pool their seeds). vs default: the "
                            "difference from the task's default at the same precision and machine, ± its interval's "
                            "half-width († where there is no such default: against the task's default). Data: how "
                            "the run's data is known (SHA-256 recorded at start, or the state statistics stored in "
                            "its policy against the file here). Below each table, the overrides of cfgs/ that train "
                            "each setting again: python main.py <overrides>.")]
    header = ["setting", "run", "final score", "seeds", "vs default", "trend", "data"]
    for i, (name, settings) in enumerate(grouped.items()):
        rows, commands, trends = [], [], {s: finished.trend(runs) for s, runs in settings.items()}
        for setting_name, runs in settings.items():
            base, mark = finished.baseline(settings, runs)
            versus = "-" if base is runs else stats.difference_text(finished.compare(runs, base)) + mark
            values, files = finished.scores(runs), runs[0].config.get("buffer.files") or ["-"]
            rows.append([setting_name, ", ".join(r.label for r in runs), stats.score_text(values),
                         stats.seeds_text(values) + seeds_left_out(runs), versus, trends[setting_name],
                         " + ".join(files) + f": {runs[0].identity()}"])
            commands.append(f"{setting_name}: `{finished.overrides(runs[0])}`")
        blocks += [("heading", 2, name + finished.shared_text(settings)), ("table", header, rows),
                   ("bullets", commands)]
        blocks += [("paragraph", s) for s in finished.different_files([r for rs in settings.values() for r in rs])]
        curves = figures.family({s: rs[0].curve("eval", "score_mean") for s, rs in settings.items()}, DEFAULT)
        rising = "; ".join(s for s, t in trends.items() if t != "level") or "none"
        blocks.append(("image", utils.save_png(curves, f"{out}_runs{i}.png", typeset.DPI),
                       f"{name}: each setting's eval score over training (mean ± std over seeds), one y-range, the "
                       f"default's curve grey in each panel. See: still rising at the end: {rising}."))
    return blocks


def write_report(runs: list, out: str, standin: bool, findings_path: Optional[str], kinds: dict) -> list:
    """<out>.pdf, <out>.md and the figures <out>_*.png, each written atomically; returns their paths."""
    grouped = finished.by_task(runs)
    data = {name: finished.trajectories(tuple(files)) for name, settings in grouped.items()  # the default's files
            if (files := (settings.get(DEFAULT) or next(iter(settings.values())))[0].files()) is not None}
    text = findings.fill(findings_path, findings.Facts(runs, grouped, data)) if findings_path else ""
    opening, rest = findings.sections(findings.blocks(text), OPENING)
    label = " (stand-in data)" if standin else ""
    blocks = [("heading", 1, f"Decision Transformer on D4RL MuJoCo{label}")]
    if standin:
        blocks.append(("paragraph", "Every score here is on stand-in datasets made by D4RL's protocol in gymnasium's "
                                    "-v4 envs, not on the D4RL release: they compare with D4RL's in spirit, not "
                                    "number for number (The data, below)."))
    blocks += (opening + results(runs, grouped, data, label) + question_figures(grouped, data, out)
               + [("heading", 2, "Method"), ("paragraph", protocol(grouped, kinds))] + rest + appendix(grouped, out))
    pdf_path, md_path = Path(f"{out}.pdf"), Path(f"{out}.md")
    utils.atomic_write_bytes(pdf_path, typeset.pdf(blocks))
    utils.atomic_write_bytes(md_path, typeset.markdown(blocks).encode())
    return [pdf_path, md_path, *(block[1] for block in blocks if block[0] == "image")]


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders runs/<date>/<time> made by main.py or main_mp.py")
    parser.add_argument("--out", help="the outputs' stem: <out>.pdf, <out>.md, <out>_*.png (default: runs/report[-n])")
    parser.add_argument("--standin", action="store_true", help="the runs used stand-in data: say so in the titles")
    parser.add_argument("--findings", help="a markdown template of what was found, its sections 'In short', 'The "
                                           "data' and 'Limitations' first (tools/findings.py)")
    parser.add_argument("--machines", help="a YAML file naming each run's machine: kinds:, default:, runs:")
    parser.add_argument("--publish", metavar="DEST", help="instead: copy the one run folder given to DEST to share "
                                                          "(no state or paths; a default run keeps its policies)")
    args = parser.parse_args(argv)
    if args.publish:
        if len(args.runs) != 1:
            raise SystemExit("error: --publish copies one run folder: give one")
        run = finished.load_run(args.runs[0])
        unfinished = run.run.publish(args.publish, policies=finished.setting(run) == DEFAULT)
        print(f"wrote {args.publish}" + (f" (left out, not finished: {', '.join(unfinished)})" if unfinished else ""))
        return
    if args.findings and not Path(args.findings).is_file():
        raise SystemExit(f"error: --findings {args.findings}: no such file")
    machines, kinds = finished.read_machines(args.machines) if args.machines else ({}, {})
    given = [p for path in args.runs for p in ([job.dir for job in Run.of_sweep(path)] or [path])]  # a sweep: its jobs
    folders = dict.fromkeys(map(os.path.abspath, given))  # a run named twice counts once
    runs = [finished.load_run(path, machines) for path in folders]  # every folder checked before anything is written
    stems = (f"runs/report-{i}" if i else "runs/report" for i in range(10_000))  # the first no file is named after
    out = args.out or next(stem for stem in stems if not glob.glob(f"{stem}[._]*"))  # (nothing of the user's replaced)
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --out under a file
        raise SystemExit(f"error: --out {out}: {e.filename}: {e.strerror}: give a path in a folder") from None
    try:
        paths = write_report(runs, out, args.standin, args.findings, kinds)
    except (RunError, utils.WriteError) as e:  # a damaged file of a run; an output that cannot be written
        raise SystemExit(f"error: {e}") from None
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
