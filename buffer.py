"""Transitions -> trajectories -> (B, K, .) training batches (the files are read by plumbing/sources.py)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from omegaconf import DictConfig, OmegaConf

import utils
from cfgs.schema import RTG_LIMIT
from plumbing.sources import DatasetError, dataset_identity, read_d4rl, run_files

if TYPE_CHECKING:
    import gymnasium as gym

log = logging.getLogger(__name__)


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
        fields = ("observations", "actions", "rewards", "ends")
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in fields),
                   " + ".join(p.source for p in parts))

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
    """DatasetError, naming the bound, for rewards beyond REWARD_LIMIT or scaled returns-to-go beyond RTG_LIMIT."""
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


def load_transitions(cfg: DictConfig, env: gym.Env) -> Transitions:
    """The transitions of the run's dataset (its recorded files, else those it names), checked against the env."""
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    files = cfg.buffer.files or run_files(cfg, *dims)
    dataset_identity(files, cfg.buffer.sha256)  # the bytes read are those the run recorded, or DatasetError
    transitions = Transitions.from_files(files, *dims)
    transitions.check(env.action_space.low, env.action_space.high)
    return transitions


class SequenceBuffer:
    """Trajectories stored back to back, sampled as context windows of K steps."""

    def __init__(self, transitions: Transitions, context_len: int, reward_scale: float, max_timestep: int,
                 sample_by: str = "length", top_percent: float = 100.0, holdout: float = 0.0,
                 keep: np.ndarray | None = None):
        """holdout: a fraction of trajectories (the same for every seed) put in held_out; keep: a mask to take."""
        starts, lengths, returns = transitions.trajectories()  # (trajectories,) each; starts: rows of the file
        self.held_out = None  # the held-out trajectories' own buffer, drawn from all trajectories
        if keep is None:
            held = np.random.default_rng(0).random(len(lengths)) < holdout  # (trajectories,) True: held out
            keep = top_trajectories(returns, top_percent) & ~held
            if held.any():
                log.info("buffer.holdout=%g: %d of %d trajectories held out", holdout, held.sum(), len(held))
                self.held_out = SequenceBuffer(transitions, context_len, reward_scale, max_timestep, sample_by,
                                               keep=held)
        if not keep.any():
            raise DatasetError(f"{transitions.source}: buffer.holdout={holdout:g} holds out every trajectory that "
                               f"buffer.top_percent={top_percent:g} keeps: lower holdout or raise top_percent")
        self.lengths, self.returns = lengths[keep], returns[keep]  # (T,) the T trajectories kept
        steps = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[keep], self.lengths)])  # (N,) their rows
        self.states = transitions.observations[steps]  # (N, obs)
        self.actions = transitions.actions[steps]  # (N, act)
        self.rewards = transitions.rewards[steps]  # (N,)
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))  # (T,) each one's first row here
        self.timesteps = np.concatenate([np.arange(n) for n in self.lengths]).clip(max=max_timestep - 1)  # (N,)
        self.returns_to_go = np.concatenate(  # the sum of the trajectory's rewards from each step on
            [np.cumsum(self.rewards[s:s + n][::-1])[::-1] for s, n in zip(self.starts, self.lengths)]
        ).astype(np.float32) / reward_scale  # (N,)
        check_reward_bounds(transitions.source, self.rewards, self.returns_to_go, reward_scale)
        self.state_mean = self.states.mean(0)
        self.state_std = self.states.std(0) + 1e-6
        self.context_len = context_len
        weights = {"length": self.lengths.astype(np.float64),  # every step equally likely, as in the DT paper
                   "uniform": np.ones(len(self.lengths)),
                   "return": self.returns - self.returns.min() + 1e-3 * (np.ptp(self.returns) + 1.0)}[sample_by]
        self.traj_probs = weights / weights.sum()  # (T,) how often each trajectory is sampled

    @property
    def num_trajectories(self) -> int:
        return len(self.lengths)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """A batch of windows (trajectory first, then a start step), padded on the right: numpy arrays states
        (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K), mask (B, K) (1: a real step)."""
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


def trajectory_scores_and_lengths(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Each trajectory's normalized return and its length in steps, of a D4RL file named <env>_<dataset>-v2.hdf5."""
    env = OmegaConf.load(Path(__file__).parent / "cfgs" / "env" / f"{Path(path).name.split('_')[0]}.yaml")
    with h5py.File(path, "r") as f:
        obs_dim, act_dim = f["observations"].shape[1], f["actions"].shape[1]
    _, lengths, returns = Transitions.from_hdf5(path, obs_dim, act_dim).trajectories()
    return utils.normalized_score(returns, env.ref_min_score, env.ref_max_score), lengths
