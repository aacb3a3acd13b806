"""report.py's reading of finished runs: their configs, summaries, machines and data; each run's setting in words and
the overrides that train it again; runs grouped by task and setting, and the comparisons that answer a question."""
import itertools
from collections import namedtuple
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import h5py
import numpy as np
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import utils
from buffer import SequenceBuffer, Transitions, trajectory_scores_and_lengths
from cfgs import schema
from plumbing.runfolder import Run, RunError, load_checkpoint
from plumbing.sources import run_dataset_files
from tools import stats

# Keys set at start, or that say where outputs go or which machine trains: never part of a setting or its overrides
SET_AT_START = ("resume", "buffer.files", "buffer.sha256", "buffer.path", "device", "logger", "wandb.", "eval.video",
                "env.assignment_bar", "env.dt_paper_score", "train.threads")
TASK_KEYS = ("seeds", "buffer.dataset", "train.log_every", "train.checkpoint_every")  # not settings
AUTO_MEANS = {"train.precision": "bf16"}  # in setting names: `auto` is bf16 on the reference runs' CPU
DEFAULT = "DT, all data"  # the setting of cfgs/'s defaults: the reference of its task
QUESTIONS = {  # a bonus question: the keys its settings change and their names, its baseline first
    "percentile": (("buffer.top_percent", "model.condition_on_return"),
                   (DEFAULT, "DT, top 10%", "DT, top 25%", "BC, all data", "BC, top 10%")),
    "aux": (("train.aux_state_coef", "train.aux_rtg_coef"),
            ("action only", "+ next state", "+ next state and return-to-go")),
    "course": (("train.ema_decay", "train.lr_schedule", "model.dropout", "train.warmup_steps"),
               (DEFAULT, "EMA 0.999", "lr cosine", "dropout 0.2", "warm-up 2,000")),
}
NAMED_KEYS = (*QUESTIONS["percentile"][0], *QUESTIONS["aux"][0], "train.precision")  # always named in a setting


@dataclass
class FinishedRun:
    """What the report reads of a finished run (through its owner, runfolder.Run): flat config, summary, machine."""
    run: Run
    config: dict  # dotted keys, today's schema, dataset paths as file names
    summary: dict
    machine: str = ""  # --machines' kind of the run's machine; "" for the default one (or none named)
    shared: tuple = ()  # settings every run of its task has (by_task): not named in its setting

    @property
    def label(self) -> str:
        return self.run.name  # <date>/<time>: no path of the machine

    @property
    def task(self) -> str:
        """env-dataset; with the env when its score is not on D4RL's scale (-v5 envs)."""
        name = f"{self.summary['env']}-{Path(self.summary['dataset']).stem}"
        return name if self.on_d4rl_scale else f"{name} ({self.config['env.id']})"

    @property
    def on_d4rl_scale(self) -> bool:
        """D4RL files in the assignment's -v4 envs: the score compares with the bars and the DT paper."""
        return self.config.get("env.id", "-v4").endswith("-v4")

    def finals(self) -> list:
        """Each finished seed's final evaluation with a finite score (nan_seeds names the others)."""
        return [f for f in self.summary["per_seed"] if np.isfinite(f["score_mean"])]

    def nan_seeds(self) -> list:
        return [f["seed"] for f in self.summary["per_seed"] if not np.isfinite(f["score_mean"])]

    def curve(self, kind: str, key: str) -> Optional[tuple]:
        """(steps, mean, std, seed count) of column `key` of each seed's `kind` table; None where no seed has it."""
        return utils.mean_std_over_seeds([t for t in self.run.tables(kind) if key in t], key)

    def files(self) -> Optional[list]:
        """The run's dataset files on this machine; None where one is missing."""
        return run_dataset_files(self.run.saved_config().get("buffer", {}))

    def identity(self) -> str:
        """How the run's data is known: its recorded SHA-256, else its policy's state statistics against the file's."""
        if self.config.get("buffer.sha256"):
            return "SHA-256 " + ", ".join(sha[:12] for sha in self.config["buffer.sha256"])
        policies, found = sorted(self.run.dir.glob("seed*/final.pt")), self.files()
        if not policies or found is None:
            return "not checked: " + ("no policy kept" if not policies else "file not here")
        stored = load_checkpoint(policies[0])["model"]
        expected = state_statistics(tuple(found), self.config["buffer.top_percent"], self.config["buffer.reward_scale"])
        same = all(np.allclose(stored[key].numpy(), value, rtol=1e-4, atol=1e-5)
                   for key, value in zip(("state_mean", "state_std"), expected))
        return f"state statistics {'match' if same else 'differ'}"

    def bar_and_paper(self) -> tuple:
        """The assignment's bar and the DT paper's D4RL score of the run's task (None where there is none)."""
        env, dataset = self.summary["env"], Path(self.summary["dataset"]).stem
        if not self.on_d4rl_scale or env not in schema.ENVS:
            return None, None
        facts = default_config(env)
        return facts.get(f"env.assignment_bar.{dataset}"), facts.get(f"env.dt_paper_score.{dataset}")

    def sweep_rows(self) -> Optional[tuple]:
        """evaluate.py's sweep: (target scores, per-seed achieved scores (targets, seeds)); None without one."""
        rows = self.run.run_table("sweep_final.csv")
        if not rows:
            return None
        targets, seeds = np.unique(rows["target"]), np.unique(rows["seed"])
        achieved = np.array([[rows["score"][(rows["target"] == t) & (rows["seed"] == s)].mean() for s in seeds]
                             for t in targets])  # (targets, seeds): each seed's mean over its episodes
        ref_min, ref_max = self.config["env.ref_min_score"], self.config["env.ref_max_score"]
        return utils.normalized_score(targets, ref_min, ref_max), achieved


def load_run(path: Union[str, Path], machines: Optional[dict] = None) -> FinishedRun:
    """A finished run folder; SystemExit with one line if it is not one."""
    run = Run(path)
    if not run.dir.is_dir():
        raise SystemExit(f"error: {path}: no such folder")
    try:
        summary = run.summary()
    except RunError as e:
        raise SystemExit(f"error: {e}") from None
    if missing := [name for name, there in (("config.yaml", run.holds_run()), ("summary.json", summary is not None))
                   if not there]:
        raise SystemExit(f"error: {path}: no {' and no '.join(missing)} there; "
                         "give a run folder that main.py has finished (it writes both)")
    config = run.saved_config()
    try:  # in today's keys, so that runs of older code differ only where their settings do
        config = OmegaConf.to_container(schema.typed(config), resolve=True)
    except (schema.ConfigError, OmegaConfBaseException):
        pass
    for key in ("files", "path"):  # the files' names: their folder is the machine's, not the run's
        if value := config.get("buffer", {}).get(key):
            config["buffer"][key] = Path(value).name if isinstance(value, str) else [Path(v).name for v in value]
    return FinishedRun(run, flatten(config), summary, (machines or {}).get(run.dir.name, ""))


@lru_cache(maxsize=None)
def trajectories(paths: tuple) -> tuple:
    """(normalized returns, lengths in steps) of the trajectories of D4RL files read as one dataset."""
    return tuple(np.concatenate(column) for column in zip(*map(trajectory_scores_and_lengths, paths)))


@lru_cache(maxsize=None)
def state_statistics(paths: tuple, top_percent: float, reward_scale: float) -> tuple:
    """The state mean and std that a run on these files computes (buffer.SequenceBuffer's)."""
    with h5py.File(paths[0], "r") as f:
        dims = f["observations"].shape[1], f["actions"].shape[1]
    data = SequenceBuffer(Transitions.from_files(paths, *dims), 1, reward_scale, 1000, top_percent=top_percent)
    return data.state_mean, data.state_std


IDENTITY_KINDS = (("SHA-256", "recorded their files' SHA-256"),
                  ("match", "kept a policy whose stored state statistics match those of the file of that name here"),
                  ("differ", "kept a policy whose state statistics differ from the file here"),
                  ("no policy", "kept no policy (published without one), so only their file's name is known"),
                  ("not here", "kept a policy but have no file here to check it against"))


def identity_text(runs: list) -> str:
    """One sentence on how the runs' data is known: FinishedRun.identity's answers, counted."""
    checks = [run.identity() for run in runs]
    counts = [(sum(word in check for check in checks), says) for word, says in IDENTITY_KINDS]
    return (f"Of the {stats.number(len(runs), 0)} runs, "
            + "; ".join(f"{stats.number(n, 0)} {says}" for n, says in counts if n) + ".")


def different_files(runs: list) -> list:
    """Sentences naming runs of one comparison that read different files of the same name (by SHA-256)."""
    by_name = {}
    for run in runs:
        for file, sha in zip(run.config.get("buffer.files") or [], run.config.get("buffer.sha256") or []):
            by_name.setdefault(file, {}).setdefault(sha, []).append(run.label)
    return [f"Runs on different files named {name}: " + "; ".join(f"{', '.join(labels)} (SHA-256 {sha[:12]})"
                                                                  for sha, labels in shas.items()) + "."
            for name, shas in by_name.items() if len(shas) > 1]


def read_machines(path: Union[str, Path]) -> tuple:
    """--machines: ({run folder name: machine kind} for runs off the default machine, {kind: description})."""
    try:
        spec = OmegaConf.to_container(OmegaConf.load(path))
        kinds, default, runs = spec["kinds"], spec["default"], spec.get("runs") or {}
    except (OSError, OmegaConfBaseException, KeyError, TypeError) as e:
        raise SystemExit(f"error: --machines {path}: not a file of kinds:, default: and runs: ({e})") from None
    if unknown := sorted({kind for kind in [default, *runs.values()] if kind not in kinds}):
        raise SystemExit(f"error: --machines {path}: machine {unknown[0]} is not under kinds: add it there")
    return {name: kind for name, kind in runs.items() if kind != default}, {**kinds, "": kinds[default]}


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {"dotted.key": value}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


@lru_cache(maxsize=None)
def default_config(env: str) -> dict:
    """cfgs/'s values for env=<env>, flat (what `python main.py env=<env>` starts from)."""
    return flatten(OmegaConf.to_container(schema.defaults(env), resolve=True))


def retrained_changes(run: FinishedRun, auto_means: Optional[dict] = None) -> dict:
    """The run's values that differ from cfgs/'s defaults for its env, but for those set at start: {key: value}."""
    def meant(key: str, value: object) -> object:
        return (auto_means or {}).get(key, value) if value == "auto" else value
    default = default_config(run.config.get("env.name"))
    return {key: meant(key, value) for key, value in run.config.items() if not key.startswith(SET_AT_START)
            and meant(key, value) != meant(key, default.get(key, value))}


def changes(run: FinishedRun) -> dict:
    """The run's setting: what differs from cfgs/'s defaults, but for its task's keys and what its task shares."""
    return {k: v for k, v in retrained_changes(run, AUTO_MEANS).items()
            if not k.startswith(TASK_KEYS) and k not in dict(run.shared)}


def overrides(run: FinishedRun) -> str:
    """main.py's overrides of cfgs/ that train the run again: 'env=hopper buffer.dataset=medium-replay ...'."""
    def value(v: object) -> str:
        return f"[{','.join(map(value, v))}]" if isinstance(v, (list, tuple)) else stats.shown(v, commas=False)
    changed = sorted(retrained_changes(run).items())
    return " ".join([f"env={run.config.get('env.name')}", *(f"{k}={value(v)}" for k, v in changed)])


def in_words(changed: dict) -> str:
    """Changes from cfgs/'s defaults in words: 'DT, all data', 'BC, top 10%', 'DT, all data, + next state, fp32'."""
    changed = dict(changed)
    words = ["BC" if changed.pop("model.condition_on_return", True) is False else "DT"]
    top = changed.pop("buffer.top_percent", 100.0)
    words.append("all data" if top >= 100 else f"top {stats.number(top, None)}%")
    state, rtg = changed.pop("train.aux_state_coef", 0.0), changed.pop("train.aux_rtg_coef", 0.0)
    if aux := [name + (f" x{stats.number(coef, None)}" if coef != 1 else "")
               for name, coef in (("next state", state), ("return-to-go", rtg)) if coef]:
        words.append("+ " + " and ".join(aux))
    named = {"buffer.sample_by": "sampled by {}", "model.dropout": "dropout {}", "train.precision": "{}",
             "model.implementation": "{}", "eval.target_return": "target {}", "train.ema_decay": "EMA {}",
             "train.lr_schedule": "lr {}", "train.warmup_steps": "warm-up {}"}
    words += [named.get(key, key + " {}").format(stats.shown(value)) for key, value in sorted(changed.items())]
    return ", ".join(words).replace("models.ReferenceDT", "plain eager model")


def setting(run: FinishedRun) -> str:
    """The run's setting in words, with the machine it trained on where that is not the default one."""
    return in_words(changes(run)) + (f", on the {run.machine} machine" if run.machine else "")


def question_setting(run: FinishedRun, keys: tuple, names: tuple) -> Optional[str]:
    """The run's setting without precision and machine where it changes `keys` only and is one of `names`; else None."""
    changed = {k: v for k, v in changes(run).items() if k != "train.precision"}
    if set(changed) - set(keys):
        return None
    name = in_words(changed).removeprefix(f"{DEFAULT}, ")
    return names[0] if name == DEFAULT else (name if name in names else None)


def condition(run: FinishedRun) -> str:
    """What a comparison must hold fixed besides the setting: 'fp32', 'bf16, on the avx2 machine'."""
    return run.config.get("train.precision") + (f", on the {run.machine} machine" if run.machine else "")


def by_task(runs: list) -> dict:
    """{task: {setting: [runs]}}, tasks in the order of cfgs' envs and datasets; runs of one setting pool seeds.
    A change every run of a task shares (train.steps=200 of a quick study) is the task's, named beside it."""
    def order(run: FinishedRun) -> tuple:
        env, _, dataset = run.task.partition("-")
        rank = lambda x, known: known.index(x) if x in known else len(known)  # noqa: E731
        return rank(env, schema.ENVS), rank(dataset, schema.DATASETS), run.task
    grouped = {}
    for name, members in itertools.groupby(sorted(runs, key=order), key=lambda r: r.task):
        members = list(members)
        changed = [retrained_changes(r, AUTO_MEANS) for r in members]
        keys = sorted(k for k, v in changed[0].items() if k not in NAMED_KEYS and not k.startswith(TASK_KEYS)
                      and all(k in c and repr(c[k]) == repr(v) for c in changed))
        for run, c in zip(members, changed):
            run.shared = tuple((k, c[k]) for k in keys)
            grouped.setdefault(name, {}).setdefault(setting(run), []).append(run)
    return grouped


def shared_text(settings: dict) -> str:
    """' (train.steps=200)': the changes every run of a task shares, or ''."""
    shared = next(iter(settings.values()))[0].shared
    return f" ({', '.join(f'{k}={stats.shown(v)}' for k, v in shared)})" if shared else ""


def scores(runs: list) -> list:
    return [f["score_mean"] for run in runs for f in run.finals()]


def compare(runs: list, base: list) -> Optional[tuple]:
    return stats.difference([f for r in runs for f in r.finals()], [f for r in base for f in r.finals()])


def trend(runs: list) -> str:
    """'level', or where the runs' pooled eval scores still rise at the end of training (stats.trend_text)."""
    return stats.trend_text([t for r in runs for t in r.run.tables("eval")], runs[0].config.get("train.steps"))


def baseline(settings: dict, runs: list) -> tuple:
    """The default of the runs' task at their precision and machine, and ''; else the task's default and ' †'."""
    same = [rs for rs in settings.values() if condition(rs[0]) == condition(runs[0])
            and not set(changes(rs[0])) - {"train.precision"}]
    if same and (same[0] is not runs or runs is settings.get(DEFAULT)):  # not a default-like setting against itself
        return same[0], ""
    return settings.get(DEFAULT) or [], " †"


# A setting against its baseline; note: '' where the two share precision and machine, else how they differ
Comparison = namedtuple("Comparison", "task setting runs base note")


def comparisons(grouped: dict, keys: tuple, names: tuple) -> list:
    """Each task's settings of one question (names[0] the baseline), at the default's condition where they ran so."""
    found = []
    for task, settings in grouped.items():
        named, default = {}, settings.get(DEFAULT)
        for runs in settings.values():
            if (name := question_setting(runs[0], keys, names)) is not None:
                named.setdefault(name, {})[condition(runs[0])] = runs
        if not default or len(named) < 2:
            continue
        for name in (n for n in names[1:] if n in named):
            runs = named[name].get(condition(default[0])) or next(iter(named[name].values()))
            base, mark = baseline(settings, runs)
            note = "" if condition(runs[0]) == condition(default[0]) else condition(runs[0]) + (
                f"; its baseline {condition(default[0])}" if mark else ", as is its baseline")
            found.append(Comparison(task, name, runs, base, note))
    return found
