"""D4RL hdf5 files or Minari datasets -> transitions -> trajectories -> (B, K, .) training batches.

    python buffer.py [files ...] [--out runs/dataset_returns.png] [--force]   # trajectory-return histograms
                                                   # of the files (default: every file in $D4RL_DATASET_DIR)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import minari

from cfgs.schema import DATASETS, ENVS, RTG_LIMIT, SAMPLE_BY

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{file}"
log = logging.getLogger(__name__)
KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(RuntimeError):
    """A dataset that cannot be found, fetched or read; the message names the fix."""


def discounted_cumsum(x: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """y[t] = sum_{k >= t} gamma^(k - t) x[k]; with gamma = 1 the return-to-go."""
    y = np.zeros_like(x, dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(x))):
        running = x[t] + gamma * running
        y[t] = running
    return y


# ---------------------------------------------------------------------------------------------
# Finding, downloading and checking D4RL files


def dataset_file(env: str, dataset: str) -> str:
    """D4RL's file name, e.g. ('hopper', 'medium-replay') -> 'hopper_medium_replay-v2.hdf5'."""
    if env not in ENVS:
        raise DatasetError(f"unknown env '{env}': choose one of {', '.join(ENVS)} (env=<name>)")
    if dataset not in DATASETS:
        raise DatasetError(
            f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)} (buffer.dataset=<name>)")
    return f"{env}_{dataset.replace('-', '_')}-v2.hdf5"


def dataset_dir() -> Path:
    """$D4RL_DATASET_DIR if set, else d4rl's own cache ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def run_dataset_files(buffer_cfg: Mapping) -> list[Path] | None:
    """The D4RL files a run read, on this machine: each recorded file (buffer.files, or buffer.path), else a file
    of that name in the D4RL folder (a run copied from elsewhere); None for Minari data or where one is missing."""
    recorded = buffer_cfg.get("files") or as_list(buffer_cfg.get("path"))
    if not recorded or buffer_cfg.get("source", "d4rl") != "d4rl":
        return None
    found = [next((p for p in (Path(r), dataset_dir() / Path(r).name) if p.is_file()), None) for r in recorded]
    return None if None in found else found


def as_list(paths: str | Sequence[str] | None) -> list[str]:
    """buffer.path as a list of files: one file, or several read in order as one dataset."""
    if not paths:
        return []
    return [paths] if isinstance(paths, str) else list(paths)


def read_d4rl(path: str | Path, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """The arrays of a D4RL-layout file, checked: keys, shapes for these space sizes, finite values.

    Raises DatasetError naming the fix for a missing, truncated, corrupt or mismatched file.
    """
    fix = "replace it with a good copy"  # a cached download is fetched again by find_dataset
    if not Path(path).is_file():
        raise DatasetError(f"{path}: no such file. Put the dataset there, or, for a resumed run whose file moved, "
                           f"edit buffer.file in the run's config.yaml")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in KEYS if k not in f]
            if missing:
                raise DatasetError(f"{path} lacks the D4RL keys {missing}: {fix}")
            data = {k: f[k][:] for k in KEYS}  # reads every chunk: catches truncation
    except OSError as e:
        raise DatasetError(f"{path} is truncated or corrupt ({e}): {fix}") from e
    n = len(data["rewards"])
    expected = {"observations": (n, obs_dim), "actions": (n, act_dim), "rewards": (n,), "terminals": (n,),
                "timeouts": (n,)}
    for key, shape in expected.items():
        if data[key].shape != shape:
            raise DatasetError(f"{path}: '{key}' has shape {data[key].shape}, expected {shape} for this env "
                               f"(observation dim {obs_dim}, action dim {act_dim}); is it another env's file?")
    for key in ("observations", "actions", "rewards"):
        if not np.isfinite(data[key]).all():
            raise DatasetError(f"{path}: '{key}' holds NaN or inf values: {fix}")
    return data


def download(url: str, path: Path) -> Path:
    """Fetch `url` into a temporary file beside `path`; the caller renames it once checked."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {path.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url} ({e}). Download it by hand to {path}, or set "
            f"D4RL_DATASET_DIR to a folder that holds {path.name}") from e
    except BaseException:  # Ctrl-C: no partial file of hundreds of MB left in the cache
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def find_dataset(env: str, dataset: str, obs_dim: int, act_dim: int) -> list[Path]:
    """The checked D4RL file of env + dataset, downloaded into the cache when missing, truncated or corrupt; for
    medium-expert where only its medium and expert files are here, those two in that order (D4RL made it so)."""
    name = dataset_file(env, dataset)
    parts = [dataset_dir() / dataset_file(env, part) for part in ("medium", "expert")]
    if dataset == "medium-expert" and not (dataset_dir() / name).exists() and all(p.exists() for p in parts):
        return [find_file(env, part, obs_dim, act_dim) for part in ("medium", "expert")]
    return [find_file(env, dataset, obs_dim, act_dim)]


def find_file(env: str, dataset: str, obs_dim: int, act_dim: int) -> Path:
    """Path of a checked D4RL file; downloaded into the cache when missing, truncated or corrupt."""
    name = dataset_file(env, dataset)
    path = dataset_dir() / name
    if path.exists():
        try:
            read_d4rl(path, obs_dim, act_dim)
            return path
        except DatasetError as e:
            log.warning("%s; downloading it again", e)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"D4RL_DATASET_DIR={path.parent} cannot be created ({e.strerror}): set "
                           f"D4RL_DATASET_DIR to a folder you can write, or that holds {name}") from None
    tmp = download(D4RL_URL.format(file=name), path)
    try:
        read_d4rl(tmp, obs_dim, act_dim)
    except DatasetError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # only a complete, checked file ever has the final name
    return path


# ---------------------------------------------------------------------------------------------
# The data's identity: a run records its file's SHA-256 (buffer.sha256); hashed once per file, cached


def sha256_cache_path() -> Path:
    """Where the hashes of dataset files are kept: $XDG_CACHE_HOME (or ~/.cache)/decision-transformer/."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "decision-transformer" / "dataset_sha256.json"


def hash_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dataset_sha256(path: str | Path) -> str:
    """The SHA-256 of a dataset file, hashed once per file: cached by its path, size and mtime (a 1M-row file is
    not read again at every start). An unwritable cache only costs the hashing again."""
    path = Path(path).resolve()
    stat = path.stat()
    key, cache_path = f"{path}|{stat.st_size}|{stat.st_mtime_ns}", sha256_cache_path()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # the file's older versions
        cache[key] = hash_file(path)
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_path)
        except OSError as e:
            log.warning("%s: cannot keep the dataset's hash (%s); it is computed again at the next start",
                        cache_path, e.strerror)
    return cache[key]


def dataset_identity(files: Sequence[str] | None, recorded: Sequence[str] | None) -> list[str] | None:
    """The SHA-256 of each of the run's dataset files (None for a Minari folder); DatasetError when `recorded` (the
    run's buffer.sha256) names another: a resume would train on other data."""
    if not files or not all(Path(f).is_file() for f in files):
        return None if recorded is None else list(recorded)
    shas = [dataset_sha256(f) for f in files]
    for file, sha, was in zip(files, shas, recorded or [None] * len(files)):
        if was and sha != was:
            raise DatasetError(f"buffer.files: {file} changed since the run started (SHA-256 {was[:12]}... "
                               f"recorded, {sha[:12]}... now): put the run's file back, or start a new run on it")
    return shas


# ---------------------------------------------------------------------------------------------
# Minari datasets (D4RL's maintained successor): ids mujoco/<env>/<name>-v<N>, recorded in gymnasium's -v5 envs


def load_minari(dataset_id: str) -> minari.MinariDataset:
    """A Minari dataset on disk, or DatasetError naming the command that fetches it."""
    import minari
    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"Minari dataset {dataset_id} is not in {root} (MINARI_DATASETS_PATH): fetch it with "
                           f"`minari download {dataset_id}`") from None


def minari_ref_scores(metadata: dict) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) of a Minari dataset's metadata, or None where it lacks either."""
    if metadata.get("ref_min_score") is None or metadata.get("ref_max_score") is None:
        return None
    return float(metadata["ref_min_score"]), float(metadata["ref_max_score"])


def expert_dataset_id(dataset_id: str) -> str | None:
    """The same env's Minari expert dataset of the newest version on disk, e.g. mujoco/hopper/expert-v0; or None."""
    import minari
    namespace = dataset_id.rsplit("/", 1)[0]  # mujoco/hopper
    experts = sorted((i for i in minari.list_local_datasets() if i.startswith(f"{namespace}/expert-v")),
                     key=lambda i: int(i.rsplit("-v", 1)[1]) if i.rsplit("-v", 1)[1].isdigit() else -1)
    return experts[-1] if experts else None


def reference_scores(dataset_id: str, metadata: dict, command_line: tuple[float, float] | None = None) -> tuple[float,
                     float, str]:
    """(ref_min_score, ref_max_score, ref_source) of a Minari dataset: its own; else those given on the command
    line; else its env's Minari expert dataset's, when that is on disk; else DatasetError naming both ways."""
    if (own := minari_ref_scores(metadata)) is not None:
        if command_line is not None:
            log.warning("%s has its own reference scores %s: env.ref_min_score and env.ref_max_score are ignored",
                        dataset_id, own)
        return (*own, "minari")
    if command_line is not None:
        return (*command_line, "command-line")
    expert = expert_dataset_id(dataset_id)
    if expert is not None and (scores := minari_ref_scores(load_minari(expert).storage.metadata)) is not None:
        log.info("%s has no reference scores: using those of %s, %s", dataset_id, expert, scores)
        return (*scores, "minari-expert")
    namespace = dataset_id.rsplit("/", 1)[0]
    raise DatasetError(f"Minari dataset {dataset_id} has no reference scores (ref_min_score, ref_max_score): give "
                       f"them, e.g. env.ref_min_score=<a random policy's return> env.ref_max_score=<an expert's "
                       f"return>, or put {namespace}/expert-v0 on disk (`minari download {namespace}/expert-v0`)")


def minari_facts(dataset_id: str, command_line: tuple[float, float] | None = None) -> dict:
    """What a run takes from a local Minari dataset: its data folder, its env (id and kwargs) and reference scores.

    command_line: (ref_min_score, ref_max_score) given as overrides, used when the dataset has none (Minari's
    published MuJoCo datasets may have none). The normalized score then uses the scale ref_source names
    (cfgs/schema.py REF_SOURCES): Minari's (0: a random policy, 100: Minari's expert policy, both in -v5) or the user's.
    """
    dataset = load_minari(dataset_id)
    spec = dataset.spec.env_spec
    if spec is None:
        raise DatasetError(f"Minari dataset {dataset_id} lacks its env spec: a run needs the env to evaluate in")
    ref_min, ref_max, source = reference_scores(dataset_id, dataset.storage.metadata, command_line)
    return {"file": str(dataset.storage.data_path), "env_id": spec.id, "env_kwargs": dict(spec.kwargs or {}),
            "ref_min_score": ref_min, "ref_max_score": ref_max, "ref_source": source}


# ---------------------------------------------------------------------------------------------
# Transitions and trajectories


@dataclass
class Transitions:
    """Flat arrays of transitions in dataset order; `ends[i]` marks the last step of an episode."""
    observations: np.ndarray  # (N, obs_dim)
    actions: np.ndarray  # (N, act_dim)
    rewards: np.ndarray  # (N,)
    ends: np.ndarray  # (N,) bool: terminal or timeout
    source: str = "dataset"  # the file, for messages

    @classmethod
    def from_hdf5(cls, path: str | Path, obs_dim: int, act_dim: int) -> Transitions:
        data = read_d4rl(path, obs_dim, act_dim)
        ends = data["terminals"].astype(bool) | data["timeouts"].astype(bool)
        return cls(data["observations"].astype(np.float32), data["actions"].astype(np.float32),
                   data["rewards"].astype(np.float32), ends, str(path))

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], obs_dim: int, act_dim: int) -> Transitions:
        """D4RL-layout files read in order as one dataset; each file's last step ends a trajectory."""
        parts = [cls.from_hdf5(p, obs_dim, act_dim) for p in paths]
        if len(parts) == 1:
            return parts[0]
        for part in parts[:-1]:
            part.ends[-1] = True  # a file's cut-off last episode does not run on into the next file
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("observations", "actions", "rewards",
                                                                               "ends")),
                   " + ".join(p.source for p in parts))

    @classmethod
    def from_minari(cls, folder: str | Path, obs_dim: int, act_dim: int) -> Transitions:
        """The episodes of a Minari dataset's data folder back to back (each episode's final observation dropped)."""
        import minari
        episodes = list(minari.MinariDataset(folder).iterate_episodes())
        observations = np.concatenate([e.observations[:-1] for e in episodes]).astype(np.float32)  # (N, obs)
        actions = np.concatenate([e.actions for e in episodes]).astype(np.float32)  # (N, act)
        if observations.shape[1:] != (obs_dim,) or actions.shape[1:] != (act_dim,):
            raise DatasetError(f"{folder}: observations {observations.shape[1:]} and actions {actions.shape[1:]} do "
                               f"not fit this env (observation dim {obs_dim}, action dim {act_dim})")
        ends = np.concatenate([np.arange(len(e.rewards)) == len(e.rewards) - 1 for e in episodes])  # (N,)
        rewards = np.concatenate([e.rewards for e in episodes]).astype(np.float32)
        return cls(observations, actions, rewards, ends, str(folder))

    def __len__(self) -> int:
        return len(self.rewards)

    def trajectories(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each trajectory's first step, length and return; the file's last, cut-off episode counts as one."""
        ends = np.flatnonzero(self.ends)
        if len(ends) == 0 or ends[-1] != len(self) - 1:
            ends = np.append(ends, len(self) - 1)
        starts = np.concatenate(([0], ends[:-1] + 1))
        return starts, ends - starts + 1, np.add.reduceat(self.rewards.astype(np.float64), starts)

    def check(self, action_low: np.ndarray, action_high: np.ndarray, tolerance: float = 1e-4) -> None:
        """Refuse data a DT cannot learn from, saying what is wrong with numbers; warn about short trajectories."""
        n = len(self)
        if n == 0:
            raise DatasetError(f"{self.source}: holds no transitions")
        if not self.ends.any():
            raise DatasetError(f"{self.source}: no complete trajectory: none of its {n} steps is marked in "
                               f"'terminals' or 'timeouts'")
        if self.ends.all():
            raise DatasetError(f"{self.source}: every one of its {n} steps ends a trajectory ('terminals' or "
                               f"'timeouts'): no trajectory longer than one step to learn from")
        excess = np.maximum(action_low - self.actions, self.actions - action_high).max(-1)  # (N,) > 0: outside
        outside = excess > tolerance
        if outside.any():
            raise DatasetError(f"{self.source}: {outside.sum()} of {n} actions lie outside the env's action bounds "
                               f"[{action_low.min():g}, {action_high.max():g}], by up to {excess.max():.3g}: is it "
                               f"another env's file, or are its actions not scaled to the env's bounds?")
        with np.errstate(over="ignore"):  # an overflow is what this looks for
            stats_finite = np.isfinite(self.observations.mean(0)).all() and np.isfinite(self.observations.std(0)).all()
        if not stats_finite:
            raise DatasetError(f"{self.source}: the state statistics overflow (|state| up to "
                               f"{np.abs(self.observations).max():.3g}): the states cannot be normalized")
        lengths = np.diff(np.flatnonzero(np.append(True, self.ends)))  # complete trajectories' lengths
        if np.median(lengths) < 10:
            log.warning("%s: %d trajectories of median length %.1f steps: a DT learns little from such short "
                        "trajectories", self.source, len(lengths), np.median(lengths))


REWARD_LIMIT = 1e4  # |reward| of one step: D4RL MuJoCo's are below 15; beyond, a file's rewards are not of these envs


def check_reward_bounds(source: str, rewards: np.ndarray, scaled_returns_to_go: np.ndarray,
                        reward_scale: float) -> None:
    """DatasetError, naming the bound, for rewards beyond REWARD_LIMIT or returns-to-go that after reward_scale
    lie beyond what the model can embed (cfgs/schema.py RTG_LIMIT): its losses and scores could not be finite."""
    worst = np.abs(rewards).max(initial=0)
    if not worst <= REWARD_LIMIT:
        raise DatasetError(f"{source}: rewards up to |{worst:.3g}| per step, beyond the bound {REWARD_LIMIT:g} "
                           f"(D4RL MuJoCo's are below 15): is it a file of these envs?")
    scaled = np.abs(scaled_returns_to_go).max(initial=0)
    if not scaled <= RTG_LIMIT:
        raise DatasetError(f"buffer.reward_scale={reward_scale:g}: the data's returns-to-go / reward_scale reach "
                           f"{scaled:.3g}, beyond {RTG_LIMIT:g} (what the model can embed): raise buffer.reward_scale")


def top_trajectories(returns: np.ndarray, top_percent: float) -> np.ndarray:
    """Percentile behaviour cloning: which trajectories have a return in the top `top_percent` % (a mask)."""
    return returns >= np.percentile(returns, 100.0 - top_percent)


class SequenceBuffer:
    """Trajectories stored back to back, sampled as context windows of K steps."""

    def __init__(self, transitions: Transitions, context_len: int, reward_scale: float, max_timestep: int,
                 sample_by: str = "length", top_percent: float = 100.0):
        starts, lengths, returns = transitions.trajectories()  # (trajectories,) each; starts: rows of the file
        keep = top_trajectories(returns, top_percent)
        self.lengths, self.returns = lengths[keep], returns[keep]  # (T,) the T trajectories kept
        steps = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[keep], self.lengths)])  # (N,) their rows
        self.states = transitions.observations[steps]  # (N, obs)
        self.actions = transitions.actions[steps]  # (N, act)
        self.rewards = transitions.rewards[steps]  # (N,)
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))  # (T,) each one's first row here
        self.timesteps = np.concatenate([np.arange(n) for n in self.lengths]).clip(max=max_timestep - 1)  # (N,)
        self.returns_to_go = np.concatenate(
            [discounted_cumsum(self.rewards[s:s + n]) for s, n in zip(self.starts, self.lengths)]
        ).astype(np.float32) / reward_scale  # (N,)
        check_reward_bounds(transitions.source, self.rewards, self.returns_to_go, reward_scale)
        self.state_mean = self.states.mean(0)
        self.state_std = self.states.std(0) + 1e-6
        self.context_len = context_len
        self.traj_probs = self._traj_probs(sample_by)

    def _traj_probs(self, sample_by):
        if sample_by == "length":  # every step equally likely, as in the DT paper
            weights = self.lengths.astype(np.float64)
        elif sample_by == "uniform":
            weights = np.ones(len(self.lengths))
        elif sample_by == "return":
            weights = self.returns - self.returns.min() + 1e-3 * (np.ptp(self.returns) + 1.0)
        else:
            raise ValueError(f"buffer.sample_by must be one of {', '.join(SAMPLE_BY)}, not '{sample_by}'")
        return weights / weights.sum()

    @property
    def num_trajectories(self) -> int:
        return len(self.lengths)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """A batch of windows: trajectory first, then a start step; padded on the right, masked.

        Returns numpy arrays states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1),
        timesteps (B, K) and mask (B, K), 1 where a step is real.
        """
        K = self.context_len
        traj = rng.choice(self.num_trajectories, size=batch_size, p=self.traj_probs)  # (B,)
        offset = (rng.random(batch_size) * self.lengths[traj]).astype(np.int64)  # (B,) start in trajectory
        first = self.starts[traj] + offset  # (B,)
        last = self.starts[traj] + self.lengths[traj] - 1  # (B,)
        idx = first[:, None] + np.arange(K)  # (B, K)
        mask = idx <= last[:, None]  # (B, K)
        idx = np.minimum(idx, last[:, None])
        m = mask[..., None]
        return (np.where(m, self.states[idx], 0.0).astype(np.float32),
                np.where(m, self.actions[idx], 0.0).astype(np.float32),
                np.where(m, self.returns_to_go[idx, None], 0.0).astype(np.float32),
                np.where(mask, self.timesteps[idx], 0),
                mask.astype(np.float32))


def trajectory_scores(path: str | Path) -> np.ndarray:
    """The normalized returns of a D4RL file's trajectories; its env is read from the file name."""
    from omegaconf import OmegaConf

    import utils
    env = OmegaConf.load(Path(__file__).parent / "cfgs" / "env" / f"{Path(path).name.split('_')[0]}.yaml")
    with h5py.File(path, "r") as f:
        obs_dim, act_dim = f["observations"].shape[1], f["actions"].shape[1]
    returns = Transitions.from_hdf5(path, obs_dim, act_dim).trajectories()[2]
    return utils.normalized_score(returns, env.ref_min_score, env.ref_max_score)


def task_name(path: str | Path) -> str:
    """hopper_medium_replay-v2.hdf5 -> hopper-medium-replay."""
    env, _, rest = Path(path).name.partition("_")
    return f"{env}-{rest.split('-v')[0].replace('_', '-')}"


def plot_returns(paths: list[str | Path], out: str | Path) -> Path:
    """The trajectory-return histogram of each D4RL file on the normalized-score axis, as the assignment's Figure 1."""
    import utils
    datasets = {task_name(p): trajectory_scores(p) for p in paths}
    return utils.save_png(utils.dataset_returns_figure(datasets), out)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help="D4RL-layout files named <env>_<dataset>-v2.hdf5")
    parser.add_argument("--out", help="the figure (default: runs/dataset_returns.png, or -1, -2, ... if it exists)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    import utils
    if args.out:
        utils.refuse_replacing(args.out, args.force)
    files = args.files or sorted(str(p) for p in dataset_dir().glob("*.hdf5"))
    unknown = [f for f in files if Path(f).name.split("_")[0] not in ENVS]
    if not files or unknown:
        raise SystemExit(f"error: {'no .hdf5 files in ' + str(dataset_dir()) if not files else unknown[0]}: give "
                         f"files named <env>_<dataset>-v2.hdf5 with env one of {', '.join(ENVS)}")
    out = Path(args.out) if args.out else utils.new_path(Path("runs") / "dataset_returns.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        plot_returns(sorted(files, key=lambda f: (ENVS.index(Path(f).name.split("_")[0]), f)), out)
    except DatasetError as e:
        raise SystemExit(f"error: {e}")
    print(f"wrote {out}")
