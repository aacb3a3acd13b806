"""report.py's view of the data behind each run: the trajectories of its dataset files (where they are on this
machine), how the data is known (a recorded SHA-256, else the state statistics stored in its policy), the bars and
the DT paper's scores of cfgs/env/, and evaluate.py's sweep. A run here is report.FinishedRun."""
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

import utils
from plumbing.runfolder import load_checkpoint
from plumbing.sources import run_dataset_files
from tools import stats

CFGS = Path(__file__).resolve().parents[1] / "cfgs"


def files(run: Any) -> Optional[list]:
    """The run's dataset files on this machine; None where one is missing (or for Minari data)."""
    return run_dataset_files(run.run.saved_config().get("buffer", {}))


@lru_cache(maxsize=None)
def trajectories(paths: tuple) -> tuple:
    """(normalized returns, lengths in steps) of the trajectories of D4RL files read as one dataset."""
    from buffer import trajectory_scores_and_lengths
    parts = [trajectory_scores_and_lengths(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@lru_cache(maxsize=None)
def state_statistics(paths: tuple, top_percent: float, reward_scale: float) -> tuple:
    """The state mean and std that a run on these files computes (buffer.SequenceBuffer's)."""
    import h5py

    from buffer import SequenceBuffer, Transitions
    with h5py.File(paths[0], "r") as f:
        dims = f["observations"].shape[1], f["actions"].shape[1]
    data = SequenceBuffer(Transitions.from_files(paths, *dims), 1, reward_scale, 1000, top_percent=top_percent)
    return data.state_mean, data.state_std


def identity(run: Any) -> str:
    """How the run's data is known beyond its file's name: the SHA-256 recorded at start; else the state statistics
    stored in its policy (final.pt) against those of the file here (match, differ); else not checked, and why."""
    if run.config.get("buffer.sha256"):
        return "SHA-256 " + ", ".join(sha[:12] for sha in run.config["buffer.sha256"])
    policies, found = sorted(run.run.dir.glob("seed*/final.pt")), files(run)
    if not policies or found is None:
        return "not checked: " + ("no policy kept" if not policies else "file not here")
    stored = load_checkpoint(policies[0])["model"]
    expected = state_statistics(tuple(found), run.config["buffer.top_percent"], run.config["buffer.reward_scale"])
    same = all(np.allclose(stored[key].numpy(), value, rtol=1e-4, atol=1e-5)
               for key, value in zip(("state_mean", "state_std"), expected))
    return f"state statistics {'match' if same else 'differ'}"


IDENTITY_KINDS = (("SHA-256", "recorded their files' SHA-256"),
                  ("match", "kept a policy whose stored state statistics match those of the file of that name here"),
                  ("differ", "kept a policy whose state statistics differ from the file here"),
                  ("no policy", "kept no policy (published without one), so only their file's name is known"),
                  ("not here", "kept a policy but have no file here to check it against"))


def identity_text(runs: list) -> str:
    """One sentence on how the runs' data is known: identity()'s answers, counted."""
    checks = [identity(run) for run in runs]
    counts = [(sum(word in check for check in checks), says) for word, says in IDENTITY_KINDS]
    return (f"Of the {stats.number(len(runs), 0)} runs, " + "; ".join(f"{stats.number(n, 0)} {says}" for n, says in counts if n)
            + ".")


def different_files(runs: list) -> list:
    """Sentences naming runs of one comparison that read different files of the same name (by SHA-256)."""
    by_name = {}
    for run in runs:
        for file, sha in zip(run.config.get("buffer.files") or [], run.config.get("buffer.sha256") or []):
            by_name.setdefault(file, {}).setdefault(sha, []).append(run.label)
    return [f"Runs on different files named {name}: " + "; ".join(f"{', '.join(labels)} (SHA-256 {sha[:12]})"
                                                                  for sha, labels in shas.items()) + "."
            for name, shas in by_name.items() if len(shas) > 1]


def bar_and_paper(run: Any) -> tuple:
    """The assignment's bar and the DT paper's D4RL score of the run's task (None where there is none)."""
    path = CFGS / "env" / f"{run.summary['env']}.yaml"
    if not run.on_d4rl_scale or not path.exists():
        return None, None
    facts, dataset = OmegaConf.to_container(OmegaConf.load(path)), Path(run.summary["dataset"]).stem
    return facts.get("assignment_bar", {}).get(dataset), facts.get("dt_paper_score", {}).get(dataset)


def sweep_rows(run: Any) -> Optional[tuple]:
    """evaluate.py's sweep of the run: (target scores, per-seed achieved scores (targets, seeds)); None without."""
    rows = run.run.run_table("sweep_final.csv")
    if not rows:
        return None
    targets, seeds = np.unique(rows["target"]), np.unique(rows["seed"])
    achieved = np.array([[rows["score"][(rows["target"] == t) & (rows["seed"] == s)].mean() for s in seeds]
                         for t in targets])  # (targets, seeds): each seed's mean over its episodes
    return utils.normalized_score(targets, run.config["env.ref_min_score"], run.config["env.ref_max_score"]), achieved
