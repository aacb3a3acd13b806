"""The findings: a markdown template (headings, paragraphs, '- ' bullets) whose numbers are {placeholders} that
report.py fills from the runs, so that no number in the report is typed by hand. What a placeholder may name: Facts.

    {hopper-medium}                       the mean ± std over the seeds of that run's setting: 102.2 ± 2.2
    {hopper-medium:seeds}                 a field (Facts.fields), or {hopper-medium:config.train.steps}
    {walker2d-medium-bc10 - walker2d-medium-bc100}          the difference ± its 95% interval's half-width
    {walker2d-medium-bc10 - walker2d-medium-bc100:claim}    the same in the words its interval allows
    {data-identity}                       how each run's data is known"""
import re
from pathlib import Path
from typing import Union

import numpy as np

from tools import stats
from tools.runs import compare, condition, identity_text, scores, setting, trend


class Facts:
    """The numbers a template may name. A run is named by its folder and stands for its setting's seeds."""

    def __init__(self, runs: list, grouped: dict, data: dict):
        self.runs, self.grouped, self.data = runs, grouped, data  # data: {task: (normalized returns, lengths)}
        self.by_name = {run.run.dir.name: (task, runs, run) for task, settings in grouped.items()
                        for runs in settings.values() for run in runs}

    def __call__(self, key: str) -> str:
        if key == "data-identity":
            return identity_text(self.runs)
        name, _, field = key.partition(":")
        if " - " in name:
            words = {"": stats.difference_text, "claim": stats.claim}
            if field not in words:
                raise KeyError(f"a difference has no field {field}: give none or :claim")
            return words[field](compare(*(self.find(n)[1] for n in name.split(" - "))))
        task, runs, run = self.find(name)
        if field.startswith("config."):
            return stats.shown(run.config[field.removeprefix("config.")])
        fields = self.fields(task, runs, run)
        if field not in fields:
            raise KeyError(f"no field {field}: choose one of {', '.join(filter(None, fields))} or config.<key>")
        return fields[field]()

    def find(self, name: str) -> tuple:
        if name not in self.by_name:
            raise KeyError(f"no run folder named {name} among the runs given")
        return self.by_name[name]

    def fields(self, task: str, runs: list, run: object) -> dict:
        """{field: its text, computed when asked}."""
        n, values, settings = stats.number, scores(runs), self.grouped[task]
        best = max(settings, key=lambda name: np.mean(scores(settings[name]) or [-np.inf]))
        data, sweep = (lambda: self.trajectories(task, run)), (lambda: self.sweep(run))
        falls = {f"{key}{part}": lambda name=name, i=i: self.falls(run, name)[i]  # falls, falls-full, falls-score
                 for key, name in (("falls", "falls"), ("falls-best", "falls_best"))
                 for i, part in enumerate(("", "-full", "-score"))}
        return {
            "": lambda: stats.score_text(values), "mean": lambda: n(np.mean(values)),
            "seeds": lambda: stats.seeds_text(values), "n": lambda: n(len(values), 0),
            "setting": lambda: setting(run), "machine": lambda: condition(run), "trend": lambda: trend(runs),
            "bar": lambda: n(run.bar_and_paper()[0], None), "paper": lambda: n(run.bar_and_paper()[1]),
            "data-mean": lambda: n(data()[0].mean()), "data-best": lambda: n(data()[0].max()),
            "data-trajectories": lambda: n(len(data()[0]), 0), "data-steps": lambda: n(data()[1].sum(), 0),
            "data-full": lambda: n(data()[2].sum(), 0), "data-full-mean": lambda: n(data()[0][data()[2]].mean()),
            "data-full-steps": lambda: n(100 * data()[1][data()[2]].sum() / data()[1].sum(), 0),
            "sweep-first": lambda: f"{n(sweep()[1][0], 0)} at a target of {n(sweep()[0][0], 0)}",
            "sweep-last": lambda: f"{n(sweep()[1][-1], 0)} at {n(sweep()[0][-1], 0)}",
            "sweep-range": lambda: f"{n(sweep()[1].min(), 0)}-{n(sweep()[1].max(), 0)}",
            "holdout": lambda: self.holdout(run), "peak": lambda: self.peak(run), **falls,
            "task-settings": lambda: n(len(settings), 0),
            "task-best": lambda: f"{stats.score_text(scores(settings[best]))} ({best})",
        }

    def trajectories(self, task: str, run: object) -> tuple:
        """(normalized returns, lengths, which trajectories run the episode's full length) of the task's data."""
        if task not in self.data:
            raise KeyError(f"the data of {task} is not on this machine (set D4RL_DATASET_DIR)")
        returns, lengths = self.data[task]
        return returns, lengths, lengths >= run.config["env.max_episode_len"]

    @staticmethod
    def peak(run: object) -> str:
        """The best periodic eval score of the seeds' mean curve, and its step."""
        curve = run.curve("eval", "score_mean")
        if curve is None:
            raise KeyError(f"{run.label} has no periodic evals (eval.csv)")
        steps, mean = curve[:2]
        return f"{stats.number(mean.max())} at step {stats.number(steps[mean.argmax()], 0)}"

    @staticmethod
    def holdout(run: object) -> str:
        """The action MSE on held-out and on training windows (buffer.holdout) at the score's peak and at the end."""
        steps, score = run.curve("eval", "score_mean")[:2]
        held, fit = run.curve("eval", "holdout_action_mse"), run.curve("eval", "fit_action_mse")
        if held is None or fit is None:
            raise KeyError(f"{run.label} has no held-out action MSE in eval.csv (train it with buffer.holdout>0)")
        peak = score.argmax()
        return (f"{stats.number(held[1][peak], 4)} at the score's peak (step {stats.number(steps[peak], 0)}) and "
                f"{stats.number(held[1][-1], 4)} at the end, against {stats.number(fit[1][peak], 4)} and "
                f"{stats.number(fit[1][-1], 4)} on training windows")

    @staticmethod
    def falls(run: object, name: str) -> tuple:
        """Of the run's <name>.csv (evaluate.py's): how many episodes fell (ended before the time limit), the mean
        score of those that did not, and of all."""
        rows = run.run.run_table(f"{name}.csv")
        if not rows or "length" not in rows:
            raise KeyError(f"{run.label} has no {name}.csv with episode lengths (python evaluate.py run=<run> "
                           f"name={name} targets=[{stats.shown(run.config['eval.target_return'])}] episodes=100"
                           + (" checkpoint=best)" if name == "falls_best" else ")"))
        fell, scores, n = rows["length"] < run.config["env.max_episode_len"], rows["score"], stats.number
        full = n(scores[~fell].mean()) if (~fell).any() else "none (every episode fell)"
        return f"{n(fell.sum(), 0)} of {n(fell.size, 0)} episodes", full, n(scores.mean())

    def sweep(self, run: object) -> tuple:
        """(targets, the seeds' mean achieved score at each) of the run's return-to-go sweep."""
        rows = run.sweep_rows()
        if rows is None:
            raise KeyError(f"{run.label} has no sweep (python evaluate.py run=<run>)")
        return rows[0], rows[1].mean(1)


def fill(path: Union[str, Path], facts: Facts) -> str:
    """The template with its placeholders filled; SystemExit naming the first that cannot be."""
    def one(match: re.Match) -> str:
        try:
            return facts(match.group(1))
        except KeyError as e:
            raise SystemExit(f"error: {path}: {{{match.group(1)}}}: {e.args[0]}") from None
    return re.sub(r"\{([^{}]+)\}", one, Path(path).read_text())


def blocks(text: str) -> list:
    """Markdown of '#' headings, paragraphs and '- ' bullet lists -> typeset blocks."""
    found, lines, items = [], [], []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if (not stripped or stripped.startswith(("#", "- "))) and lines:
            found.append(("paragraph", " ".join(lines)))
            lines = []
        if items and not (stripped.startswith("- ") or (stripped and line.startswith("  "))):
            found.append(("bullets", items))
            items = []
        if stripped.startswith("#"):
            found.append(("heading", min(3, len(stripped) - len(stripped.lstrip("#"))), stripped.lstrip("# ")))
        elif stripped.startswith("- "):
            items.append(stripped[2:])
        elif stripped and items:
            items[-1] += " " + stripped
        elif stripped:
            lines.append(stripped)
    return found


def sections(found: list, names: tuple) -> tuple:
    """The blocks of the '##' sections named `names` (in the file's order) and the other blocks."""
    opening, rest, inside = [], [], False
    for block in found:
        if block[0] == "heading" and block[1] <= 2:
            inside = block[2] in names
        (opening if inside else rest).append(block)
    return opening, rest
