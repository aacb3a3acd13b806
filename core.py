"""Training and evaluation of one seed: batches -> masked action MSE -> AdamW; periodic evals."""
import copy
import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for the video

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from omegaconf import DictConfig, OmegaConf

import utils
from buffer import SequenceBuffer, Transitions
from cfgs.schema import D4RL_TIME_LIMIT, ConfigError
from models import MODELS, DecisionTransformer, DTConfig, policy_checkpoint, policy_from_checkpoint
from plumbing import progress, runfolder, threads
from plumbing.runfolder import Run, SeedFolder, Tracker
from plumbing.sources import as_list, dataset_identity, find_dataset, load_minari

log = logging.getLogger(__name__)
utils.import_mujoco_without_opengl()  # OpenGL only for a video (film): a bad MUJOCO_GL fails no run without one
# The assignment fixes gymnasium's -v4 envs: their advice to move to -v5 is no news on every run.
warnings.filterwarnings("ignore", message=r".*The environment \w+-v4 is out of date", category=DeprecationWarning)
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)  # "No OpenGL_accelerate module": no news
# Env seeds of the evals: seed s runs its periodic evals on episodes seeded 1000 s, 1000 s + 1, ... and its
# final eval on 1000 s + 100 000, ...: other seeds' episodes, and no episode the periodic evals picked from.
EVAL_SEED_STRIDE, FINAL_EVAL_SEED_OFFSET = 1000, 100_000


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class NonFiniteScoreError(NonFiniteLossError):
    """An evaluation's score became NaN or inf (the policy's actions or the env's rewards): the seed stops."""


class RolloutStopped(Exception):
    """A stop signal (its name: str(e)) arrived during a rollout that checks for one; its episodes are unfinished."""


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (mask = 1) steps. pred, target (B, K, d); mask (B, K)."""
    return (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Evaluation: one loop over `num_envs` envs in lockstep; a single env is num_envs=1.


class Policy(Protocol):
    """What rollout plays: a model of windows -> actions that tells its sizes, context length and device
    (models.DecisionTransformer; the tests' stand-ins)."""

    state_dim: int
    act_dim: int
    context_len: int  # K: the steps of history each call sees
    device: torch.device
    last_timestep: int  # later timesteps are clipped to it

    def __call__(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                 timesteps: torch.Tensor) -> tuple: ...


@dataclass(frozen=True)
class RolloutSpec:
    """The episodes a rollout plays: `num_envs` envs of `env_id` (with `env_kwargs`) in lockstep, env i seeded
    seed + i and conditioned on its target return (`targets`: one for all, or one per env (num_envs,)) in the env's
    reward units, divided by `reward_scale` for the policy. time_limit: the episodes' limit (None: the env's, 1000
    for D4RL's). record: the envs to film, through the env's tracking camera."""

    env_id: str
    num_envs: int
    seed: int
    targets: float | np.ndarray
    reward_scale: float
    time_limit: int | None = None
    env_kwargs: dict = field(default_factory=dict)
    record: tuple[int, ...] = ()

    @classmethod
    def of_run(cls, cfg: DictConfig, num_envs: int, seed: int, record: tuple[int, ...] = (),
               targets: float | np.ndarray | None = None) -> "RolloutSpec":
        """The run's episodes: its env (with env.kwargs), time limit, reward scale and, by default, target return."""
        kwargs = OmegaConf.to_container(cfg.env.kwargs) if cfg.env.get("kwargs") else {}
        return cls(cfg.env.id, num_envs, seed, cfg.eval.target_return if targets is None else targets,
                   cfg.buffer.reward_scale, cfg.env.max_episode_len, kwargs, tuple(record))

    def make(self, i: int) -> gym.Env:
        """Env i of the rollout (rendering if it is filmed)."""
        film = {"render_mode": "rgb_array", "camera_name": "track"} if i in self.record else {}
        return gym.make(self.env_id, max_episode_steps=self.time_limit, **self.env_kwargs, **film)


@torch.inference_mode()
def rollout(policy: Policy, spec: RolloutSpec, stop: Callable[[], str | None] | None = None
            ) -> tuple[np.ndarray, dict[int, list[np.ndarray]]]:
    """Play the episodes of `spec` in lockstep, each conditioned on its target return lowered by its own rewards.

    stop: called before each env step; when it returns a signal's name, the episodes are left and RolloutStopped
    raised (runfolder.stop_requested: a stop at once).
    Returns per-episode returns (num_envs,) and {env: frames} of the recorded envs.
    """
    num_envs, record = spec.num_envs, spec.record
    envs = gym.vector.SyncVectorEnv([partial(spec.make, i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    max_len = envs.envs[0].spec.max_episode_steps
    device, K = policy.device, policy.context_len
    states = torch.zeros(num_envs, max_len, policy.state_dim, device=device)  # histories, (N, T, obs)
    actions = torch.zeros(num_envs, max_len, policy.act_dim, device=device)  # (N, T, act)
    returns_to_go = torch.zeros(num_envs, max_len, 1, device=device)  # (N, T, 1)
    timesteps = torch.arange(max_len, device=device).clamp(max=policy.last_timestep).expand(num_envs, max_len)  # (N, T)
    target_left = np.broadcast_to(np.asarray(spec.targets, dtype=np.float64), (num_envs,)) / spec.reward_scale  # (N,)
    episode_returns = np.zeros(num_envs)
    active = np.ones(num_envs, dtype=bool)
    frames = {i: [] for i in record}
    obs, _ = envs.reset(seed=spec.seed)
    for t in range(max_len):
        if stop is not None and (signal_name := stop()):
            envs.close()
            raise RolloutStopped(signal_name)
        for i in frames:
            if active[i]:
                frames[i].append(envs.envs[i].render())
        states[:, t] = torch.as_tensor(obs, dtype=torch.float32, device=device)
        returns_to_go[:, t, 0] = torch.as_tensor(target_left, dtype=torch.float32, device=device)
        running = torch.as_tensor(np.flatnonzero(active), device=device)  # (n,) the envs still running
        window = slice(max(0, t - K + 1), t + 1)  # the last k <= K steps
        # All envs are at step t, so the window needs no padding; finished envs are left out.
        action_preds, _, _ = policy(states[running, window], actions[running, window],
                                    returns_to_go[running, window], timesteps[running, window])  # (n, k, act)
        actions[running, t] = action_preds[:, -1]
        obs, reward, terminated, truncated, _ = envs.step(actions[:, t].cpu().numpy())
        episode_returns += reward * active  # reward counts only until each env is done
        target_left = target_left - reward / spec.reward_scale
        active &= ~(terminated | truncated)
        if not active.any():
            break
    envs.close()
    return episode_returns, frames


def evaluate(policy: Policy, spec: RolloutSpec, ref_scores: tuple[float, float], vectorized: bool = True,
             stop: Callable[[], str | None] | None = None) -> dict:
    """Mean/std return and normalized score over the spec's episodes (num_envs episodes seeded seed, seed+1, ...):
    in one vectorized pass, or one episode after another. stop: rollout's.

    The score is 100 (return - ref_min) / (ref_max - ref_min) (ref_scores: env.ref_min_score, ref_max_score)
    whatever the time limit: D4RL's references are returns of 1000-step episodes, so with env.max_episode_len below
    1000 (the tests' tiny runs) the score is not on D4RL's scale (scale_note says so in the log, and final.json
    keeps the time limit); a longer limit is refused (cfgs/schema.py check_bounds).
    """
    if vectorized:
        returns, _ = rollout(policy, spec, stop)
    else:
        targets = np.broadcast_to(np.asarray(spec.targets, dtype=np.float64), (spec.num_envs,))
        returns = np.concatenate([rollout(policy, dataclasses.replace(spec, num_envs=1, seed=spec.seed + i,
                                                                      targets=targets[i], record=()), stop)[0]
                                  for i in range(spec.num_envs)])
    scores = utils.normalized_score(returns, *ref_scores)
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "score_mean": float(scores.mean()), "score_std": float(scores.std())}


def reference_scores(cfg: DictConfig) -> tuple[float, float]:
    """(env.ref_min_score, env.ref_max_score): the returns of scores 0 and 100."""
    return cfg.env.ref_min_score, cfg.env.ref_max_score


# ---------------------------------------------------------------------------------------------
# Building blocks of a run


def env_spec(env_cfg: DictConfig) -> str | EnvSpec:
    """What gym.make builds for a run: env.id, or with env.kwargs (a Minari dataset's env) its spec with them."""
    if not env_cfg.get("kwargs"):
        return env_cfg.id
    spec = gym.spec(env_cfg.id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **OmegaConf.to_container(env_cfg.kwargs)})


def space_dims(env: gym.Env) -> tuple[int, int]:
    return env.observation_space.shape[0], env.action_space.shape[0]


def locate_dataset(cfg: DictConfig) -> list[str]:
    """buffer.path's files, the Minari dataset's folder, or the D4RL files of env + dataset (downloaded when
    missing)."""
    if cfg.buffer.path:
        return as_list(cfg.buffer.path)
    if cfg.buffer.source == "minari":
        return [str(load_minari(cfg.buffer.dataset).storage.data_path)]
    return [str(p) for p in find_dataset(cfg.env.name, cfg.buffer.dataset, *space_dims(gym.make(cfg.env.id)))]


def load_transitions(cfg: DictConfig, env: gym.Env) -> Transitions:
    """The transitions of the run's dataset (its recorded files, else those env + dataset name), checked."""
    sources = cfg.buffer.files or locate_dataset(cfg)
    dataset_identity(sources, cfg.buffer.sha256)  # the bytes read are those the run recorded, or DatasetError
    if cfg.buffer.source == "minari":
        transitions = Transitions.from_minari(sources[0], *space_dims(env))
    else:
        transitions = Transitions.from_files(sources, *space_dims(env))
    transitions.check(env.action_space.low, env.action_space.high)
    return transitions


def load_data(cfg: DictConfig, env: gym.Env) -> SequenceBuffer:
    """The SequenceBuffer of the run's dataset, checked against the env's spaces and action bounds."""
    return SequenceBuffer(load_transitions(cfg, env), cfg.buffer.context_len, cfg.buffer.reward_scale,
                          cfg.env.max_episode_len, cfg.buffer.sample_by, cfg.buffer.top_percent)


def build_model(cfg: DictConfig, data: SequenceBuffer, env: gym.Env) -> DecisionTransformer:
    """The configured model for this env's spaces, holding the dataset's state statistics and the action bounds."""
    config = DTConfig(*space_dims(env), context_len=cfg.buffer.context_len, max_timestep=cfg.env.max_episode_len,
                      embed_dim=cfg.model.embed_dim, n_layers=cfg.model.n_layers, n_heads=cfg.model.n_heads,
                      dropout=cfg.model.dropout, condition_on_return=cfg.model.condition_on_return)
    return MODELS[cfg.model.implementation](config, state_mean=data.state_mean, state_std=data.state_std,
                                            action_low=env.action_space.low, action_high=env.action_space.high)


def load_policy(path: str | Path, env_id: str | None = None, device: str | torch.device = "cpu") -> DecisionTransformer:
    """The policy of a best.pt / final.pt checkpoint, ready to evaluate; loading it runs no code."""
    checkpoint = runfolder.load_checkpoint(path)
    if env_id is not None and checkpoint["env_id"] != env_id:
        raise ConfigError(f"checkpoint {path} was trained on {checkpoint['env_id']}, not {env_id}: "
                          f"choose the matching env=<name>")
    return policy_from_checkpoint(checkpoint).to(device)


def lr_scheduler(optimizer: torch.optim.Optimizer, train_cfg: DictConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from lr / warmup_steps to lr, then constant (the DT paper's schedule) or a cosine down to 0
    at train.steps."""
    warmup, steps, cosine = train_cfg.warmup_steps, train_cfg.steps, train_cfg.lr_schedule == "cosine"

    def factor(s: int) -> float:
        if s + 1 < warmup or not cosine:
            return min(1.0, (s + 1) / warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s + 1 - warmup) / max(1, steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EMA:
    """An exponential moving average of a model's weights (decay d: w <- d w + (1 - d) w_model after each step),
    with d ramped as min(d, (1 + n) / (10 + n)) over the first updates so that early evals are not the initial
    weights'. Its `policy` is what a run evaluates and saves."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.policy = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.policy.parameters()), list(model.parameters()), 1 - d)

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.updates = state["updates"]


def to_device(arrays: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """numpy arrays -> tensors on `device`; to a GPU from pinned memory, without waiting for its running steps."""
    tensors = [torch.from_numpy(x) for x in arrays]
    if device.type == "cuda":  # a plain copy would block the host until the GPU's queue is empty
        return [t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return tensors


LOSSES = ("loss", "action_mse", "state_mse", "rtg_mse")  # what train_step returns, in this order


def losses(model: DecisionTransformer, batch: list[torch.Tensor], train_cfg: DictConfig,
           precision: str) -> torch.Tensor:
    """The losses (4,): total, action MSE, next-state MSE and next return-to-go MSE (0 where that loss is off).

    The auxiliary targets are the next step's state (normalized) and return-to-go, read from the a_t token:
    step t's prediction counts where step t + 1 is real (mask[:, 1:]), not where it is padding.
    """
    states, actions, returns_to_go, timesteps, mask = batch  # (B, K, .) each; mask (B, K)
    aux_state, aux_rtg = train_cfg.aux_state_coef, train_cfg.aux_rtg_coef
    # Raw states and actions go in: the model normalizes them itself (a checkpoint holds the statistics).
    with torch.autocast(states.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        action_preds, state_preds, return_preds = model(states, actions, returns_to_go, timesteps,
                                                        predict_next=bool(aux_state or aux_rtg))
    action_mse = masked_mse(action_preds, actions, mask)
    state_mse = rtg_mse = torch.zeros((), device=states.device)
    loss = action_mse
    if aux_state:  # s_{t+1} from the a_t token: (B, K-1, obs) against the next states
        state_mse = masked_mse(state_preds[:, :-1], model.norm_state(states[:, 1:]), mask[:, 1:])
        loss = loss + aux_state * state_mse
    if aux_rtg:  # g_{t+1} from the a_t token: (B, K-1, 1)
        rtg_mse = masked_mse(return_preds[:, :-1], returns_to_go[:, 1:], mask[:, 1:])
        loss = loss + aux_rtg * rtg_mse
    return torch.stack((loss, action_mse, state_mse, rtg_mse))


def train_step(model: DecisionTransformer, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, batch: list[torch.Tensor], train_cfg: DictConfig,
               precision: str) -> torch.Tensor:
    """Forward, the losses, backward, clip, AdamW; returns the detached losses (4,) of `losses`."""
    step_losses = losses(model, batch, train_cfg, precision)
    optimizer.zero_grad(set_to_none=True)
    step_losses[0].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return step_losses.detach()


def same_bits_at_thread_counts(model: DecisionTransformer, batch: list[torch.Tensor], train_cfg: DictConfig,
                               precision: str, counts: range) -> bool:
    """Whether a copy of `model` gives the same gradients, gradient norm and eval actions, bit for bit, on `batch` at
    each of these torch thread counts (the same dropout at each). Leaves the model, torch's RNG and threads as
    they were."""
    threads_before, rng_before = torch.get_num_threads(), torch.get_rng_state()
    outcomes = []
    for count in counts:
        torch.set_num_threads(count)
        torch.set_rng_state(rng_before)
        twin = copy.deepcopy(model).train()
        losses(twin, batch, train_cfg, precision)[0].backward()
        norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), train_cfg.grad_clip)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            actions = twin.eval()(*batch[:4])[0]  # (B, K, act)
        outcomes.append([*(p.grad for p in twin.parameters() if p.grad is not None), norm, actions])
    torch.set_num_threads(threads_before)
    torch.set_rng_state(rng_before)
    return all(torch.equal(a, b) for outcome in outcomes[1:] for a, b in zip(outcomes[0], outcome))


def thread_governor(cfg: DictConfig, model: DecisionTransformer, batch: list[torch.Tensor],
                    precision: str) -> Callable[[], None]:
    """threads.Governor (torch threads that follow the load) where it changes no number: on a CPU, with the thread
    count chosen by the run (not OMP_NUM_THREADS or train.threads) and above one, and a step on `batch` shown to give
    the same bits at each count; else a call that does nothing. Logs which and why."""
    most = torch.get_num_threads()
    if batch[0].device.type != "cpu" or most == 1 or cfg.train.threads or os.environ.get("OMP_NUM_THREADS") \
            or not threads.can_measure_load():
        return lambda: None
    if not same_bits_at_thread_counts(model, batch, cfg.train, precision, range(1, most + 1)):
        log.info("torch threads stay at %d: this step's numbers depend on the thread count here (%s)", most,
                 precision)
        return lambda: None
    log.info("torch threads follow the load, 1 to %d (the cores other processes leave free): this step gives the "
             "same numbers at each count", most)
    return threads.Governor(most)


def train(cfg: DictConfig, seed: int, run: Run, show: progress.Reporter | None = None) -> dict:
    """Train one seed of `run` and evaluate it; its SeedRecord keeps the metrics, checkpoints and final scores and
    reports its progress to `show` (default: a bar)."""
    if (final := run.seed(seed).final()) is not None:
        log.info("seed %d already finished: score %.1f", seed, final["score_mean"])
        return final
    utils.seed_everything(seed)
    device = utils.pick_device(cfg.device)
    precision = utils.pick_precision(cfg.train.precision, device)
    env = gym.make(env_spec(cfg.env))
    data = load_data(cfg, env)
    model = build_model(cfg, data, env).to(device)
    optimizer = model.configure_optimizer(cfg.train.lr, cfg.train.weight_decay)
    scheduler = lr_scheduler(optimizer, cfg.train)
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    rng = np.random.default_rng(seed)
    record = SeedRecord.resume(cfg, seed, run, model, optimizer, scheduler, rng,
                               progress.Bar() if show is None else show, ema)
    log.info("seed %d: %d trajectories, %d steps, %s, device %s, %s, %d torch threads", seed, data.num_trajectories,
             len(data.rewards), utils.dataset_name(cfg), device, precision, torch.get_num_threads())
    probe = to_device(data.sample(cfg.train.batch_size, np.random.default_rng(0)), device)  # the run's rng untouched
    follow_the_load = thread_governor(cfg, model, probe, precision)
    with record:
        model.train()
        for step in range(record.step + 1, cfg.train.steps + 1):
            follow_the_load()
            batch = to_device(data.sample(cfg.train.batch_size, rng), device)  # (B, K, .) each
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            record.add_losses(train_step(model, optimizer, scheduler, batch, cfg.train, precision))
            if ema is not None:
                ema.update(model)
            record.log_when_due(step, lr)
            record.evaluate_when_due(step)
            record.checkpoint_when_due(step)  # and on a stop signal, which then ends training (Interrupted)
        return record.finish(env)


@dataclass
class SeedRecord:
    """One seed's record below the loop: metrics, checkpoint cadence, best/final policies, the NaN guard, the stop
    signal, the tracker and the progress it shows. Its state (a dict in last.pt) resumes a seed exactly."""

    cfg: DictConfig
    seed: int
    run: Run
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    show: progress.Reporter  # where the progress goes: main.py's bar, main_mp.py's parent
    folder: SeedFolder = field(init=False)  # the seed's folder in run
    step: int = 0  # the last step trained (and checkpointed)
    best_score: float = -np.inf  # the best periodic eval's score: best.pt's
    train_rows: list[dict] = field(default_factory=list)  # train.csv
    eval_rows: list[dict] = field(default_factory=list)  # eval.csv
    seconds_before: float = 0.0  # training seconds of earlier attempts
    loss_sums: list[float] | torch.Tensor = field(default_factory=lambda: [0.0] * len(LOSSES))  # since the last log
    pace: progress.Pace = field(default_factory=progress.Pace)  # this attempt's clock: its time, its ETA
    ema: EMA | None = None  # train.ema_decay: the averaged weights, evaluated and saved as the policy
    evaluated: bool = False  # at the current step
    tracker: Tracker | None = None

    def __post_init__(self) -> None:
        self.folder = self.run.seed(self.seed)

    @classmethod
    def resume(cls, cfg: DictConfig, seed: int, run: Run, model: DecisionTransformer, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
               show: progress.Reporter, ema: EMA | None = None) -> "SeedRecord":
        """The record of a new seed, or of the one run's last.pt holds (its model, optimizer, rng, EMA restored)."""
        record = cls(cfg, seed, run, model, optimizer, scheduler, rng, show, ema=ema)
        state = record.folder.load_state(model, optimizer, scheduler, rng)
        if state is not None:
            log.info("seed %d: resumed at step %d", seed, state["step"])
            record.step, record.best_score, record.seconds_before = state["step"], state["best_score"], state["seconds"]
            record.train_rows, record.eval_rows = state["train"], state["eval"]
            record.loss_sums = state.get("loss_sums", record.loss_sums)
            if ema is not None:
                ema.load_state_dict(state["ema"])
        device = next(model.parameters()).device
        record.loss_sums = torch.tensor(record.loss_sums, device=device)  # (4,) summed on the device: no sync
        record.pace = progress.Pace(first_step=record.step)
        return record

    def state(self) -> dict:
        """The state last.pt keeps (SeedFolder.save_state)."""
        state = {"step": self.step, "best_score": self.best_score, "train": self.train_rows, "eval": self.eval_rows,
                 "seconds": self.train_seconds(), "loss_sums": self.loss_sums.tolist()}
        return state if self.ema is None else {**state, "ema": self.ema.state_dict()}

    @property
    def policy(self) -> torch.nn.Module:
        """What is evaluated and saved: the model, or its moving average (train.ema_decay)."""
        return self.model if self.ema is None else self.ema.policy

    def train_seconds(self) -> float:
        return self.seconds_before + self.pace.seconds()

    def __enter__(self) -> "SeedRecord":
        self.tracker = self.folder.tracker(self.cfg, self.step).__enter__()
        self.report(self.step)
        return self

    def __exit__(self, *exc: object) -> None:
        self.show.close()
        self.tracker.__exit__(*exc)

    def report(self, step: int) -> None:
        """Show the seed's progress at `step`: its loss, last score and ETA (from this attempt's pace)."""
        loss = self.train_rows[-1]["loss"] if self.train_rows else None
        score = self.eval_rows[-1]["score_mean"] if self.eval_rows else None
        self.show(progress.SeedProgress(self.seed, step, self.cfg.train.steps, loss, score, len(self.eval_rows),
                                        *self.pace.estimate(self.cfg, step), at=time.time()))

    def add_losses(self, losses: torch.Tensor) -> None:
        """One step's losses (4,), summed until the next log line."""
        self.loss_sums += losses

    def log_when_due(self, step: int, lr: float) -> None:
        """Every train.log_every steps and at the last: the mean losses since the last row, checked, in train.csv."""
        if not (step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps):  # the last may be shorter
            return
        steps_logged = step - (self.train_rows[-1]["step"] if self.train_rows else 0)
        means = {k: v / steps_logged for k, v in zip(LOSSES, self.loss_sums.tolist())}  # one sync per interval
        self.loss_sums.zero_()
        check_finite(means["loss"], self.seed, step, self.run)
        aux = self.cfg.train.aux_state_coef or self.cfg.train.aux_rtg_coef
        logged = LOSSES if aux else LOSSES[:1]  # without auxiliary losses the total is the action MSE
        self.train_rows.append({"step": step, **{k: means[k] for k in logged}, "lr": lr})
        self.tracker.log("train", self.train_rows[-1])
        self.report(step)
        if len(self.train_rows) == 1 and not self.eval_rows:  # something to look at before the first checkpoint
            self.folder.save_tables(self.train_rows, self.eval_rows)
            self.run.plot(self.cfg)

    def evaluate_when_due(self, step: int) -> None:
        """Every train.eval_every steps and at the last: an eval row, and best.pt when the score is the best."""
        self.evaluated = step % self.cfg.train.eval_every == 0 or step == self.cfg.train.steps
        if self.evaluated:
            with self.pace.timing_eval():
                self.eval_rows.append(periodic_eval(self.policy, self.cfg, self.seed, step, self))
            self.tracker.log("eval", self.eval_rows[-1])
            self.report(step)

    def checkpoint_when_due(self, step: int) -> None:
        """After an eval, every train.checkpoint_every steps and on a stop signal: CSVs and last.pt; the figure
        after an eval; on a stop signal, Interrupted once the checkpoint is written."""
        stop = runfolder.stop_requested()
        if self.evaluated or step % self.cfg.train.checkpoint_every == 0 or stop:
            if stop:  # between log steps: no checkpoint of weights whose loss is unchecked
                check_finite(self.loss_sums.sum().item(), self.seed, step, self.run)
            self.step = step
            self.folder.save_state(self.model, self.optimizer, self.scheduler, self.rng, self.state())
        if self.evaluated:  # the figure follows the evals (main.py draws it again at the end or on a stop)
            self.run.plot(self.cfg)
        if stop:
            raise runfolder.Interrupted(f"seed {self.seed} stopped by {stop} at step {step}; its checkpoint is "
                                        f"written")

    def finish(self, env: gym.Env) -> dict:
        """The final evaluation (final.pt, final.json, the video), also in the tracker; returns final.json.
        A stop signal ends either at once (Interrupted): the final evaluation, which a resume repeats from last.pt
        (the last step's) to the same scores, or the video, which is skipped (the scores are kept)."""
        self.show.close()
        summary = final_evaluation(self.policy, self.cfg, self.folder, self.train_seconds())
        self.tracker.log("final", {"step": self.cfg.train.steps, **summary})
        if self.cfg.eval.video:
            film(self.policy, self.cfg, env, self.folder)
        return summary


def periodic_eval(model: DecisionTransformer, cfg: DictConfig, seed: int, step: int, record: SeedRecord) -> dict:
    """Evaluate `cfg.eval.episodes` episodes; best.pt when the score beats the best so far. Returns the eval row."""
    was_training = model.training
    model.eval()
    result = evaluate(model, RolloutSpec.of_run(cfg, cfg.eval.episodes, EVAL_SEED_STRIDE * seed),
                      reference_scores(cfg), cfg.eval.vectorized)
    model.train(was_training)
    check_finite_score(result, seed, f"the eval at step {step}")
    log.info("seed %d step %d: loss %.4f, return %.1f +- %.1f, normalized score %.1f", seed, step,
             record.train_rows[-1]["loss"], result["return_mean"], result["return_std"], result["score_mean"])
    if result["score_mean"] > record.best_score:
        record.best_score = result["score_mean"]
        record.folder.save_policy("best", policy_checkpoint(model, cfg.model.implementation, cfg.env.id))
    return {"step": step, **result}


def check_finite_score(result: dict, seed: int, what: str) -> None:
    """Stop the seed (NonFiniteScoreError, one line with the cause) on an evaluation whose score is NaN or inf."""
    if not np.isfinite(result["score_mean"]):
        raise NonFiniteScoreError(
            f"seed {seed}: {what} scored {result['score_mean']} (mean return {result['return_mean']}): the policy's "
            f"actions or the env's rewards are not finite; check the dataset and eval.target_return, and start a new "
            f"run (a resume would score the same)")


def scale_note(cfg: DictConfig) -> str:
    """'' on D4RL's time limit; else what the score's scale is not (evaluate's docstring has the rule)."""
    if cfg.env.max_episode_len >= D4RL_TIME_LIMIT:
        return ""
    return (f" (episodes cut at env.max_episode_len={cfg.env.max_episode_len} steps: not the scale of the "
            f"references' {D4RL_TIME_LIMIT}-step episodes)")


def check_finite(loss: float, seed: int, step: int, run: Run) -> None:
    """Stop on a NaN or inf loss: the checkpoint before it is kept, and a resumed run would reach it again."""
    if not np.isfinite(loss):
        raise NonFiniteLossError(
            f"seed {seed}: the loss became {loss} before step {step}. Start a new run with a lower train.lr or "
            f"train.grad_clip (resuming {run.name} would reach the same loss), or check the dataset for bad values")


def final_evaluation(model: DecisionTransformer, cfg: DictConfig, folder: SeedFolder, train_seconds: float) -> dict:
    """The final evaluation of `eval.final_episodes` fresh episodes: final.pt and final.json; returns final.json.
    On a stop signal, Interrupted at once: final.json is not written and last.pt (the last step) resumes to it."""
    seed = folder.seed
    model.eval()
    folder.save_policy("final", policy_checkpoint(model, cfg.model.implementation, cfg.env.id))
    started = time.time()
    try:
        result = evaluate(model, RolloutSpec.of_run(cfg, cfg.eval.final_episodes, final_eval_seed(seed)),
                          reference_scores(cfg), cfg.eval.vectorized, stop=runfolder.stop_requested)
    except RolloutStopped as e:
        raise runfolder.Interrupted(f"seed {seed} stopped by {e} during its final evaluation; its checkpoint of step "
                                    f"{cfg.train.steps} is kept, from which a resume repeats it") from None
    check_finite_score(result, seed, "the final evaluation")
    summary = {"seed": seed, "episodes": cfg.eval.final_episodes, **result, "time_limit": cfg.env.max_episode_len,
               "train_seconds": train_seconds, "final_eval_seconds": time.time() - started}
    folder.save_final(summary)
    log.info("seed %d final (%d episodes): return %.1f +- %.1f, normalized score %.1f +- %.1f%s", seed,
             cfg.eval.final_episodes, result["return_mean"], result["return_std"], result["score_mean"],
             result["score_std"], scale_note(cfg))
    return summary


def final_eval_seed(seed: int) -> int:
    """The env seed of seed `seed`'s first final-eval episode (EVAL_SEED_STRIDE, FINAL_EVAL_SEED_OFFSET)."""
    return EVAL_SEED_STRIDE * seed + FINAL_EVAL_SEED_OFFSET


def film(model: DecisionTransformer, cfg: DictConfig, env: gym.Env, folder: SeedFolder) -> None:
    """video.mp4: the first final-eval episode, filmed. On a stop signal, Interrupted at once, the video skipped
    (final.json is written already). A rendering error (naming MUJOCO_GL's value) or a failed write (naming the file)
    is one logged line: the scores stand without the video."""
    seed = folder.seed
    try:
        _, frames = rollout(model, RolloutSpec.of_run(cfg, 1, final_eval_seed(seed), record=(0,)),
                            stop=runfolder.stop_requested)
    except RolloutStopped as e:
        raise runfolder.Interrupted(f"seed {seed} stopped by {e} during its video: its final scores are kept "
                                    f"(final.json), the video skipped") from None
    except Exception as e:  # OpenGL's errors have no common type
        log.error("seed %d: no video: rendering failed with MUJOCO_GL=%s (%s: %s); %s", seed,
                  os.environ.get("MUJOCO_GL"), type(e).__name__, e, utils.RENDERING_FIX)
        return
    try:
        folder.save_video(frames[0], env.metadata["render_fps"])
    except OSError as e:
        log.error("seed %d: no video: cannot write %s (%s); free space there (the scores are kept)", seed,
                  folder.video_path(), e.strerror or e)
