"""The algorithm: `losses` (named: a new loss is one more entry, docs/extending.md), `train` (the loop; its
bookkeeping is plumbing/record.py), `rollout` (a policy's episodes in lockstep envs) and `evaluate` (their score)."""
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for the video

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig

import models
import utils
from buffer import SequenceBuffer, load_transitions
from cfgs.schema import D4RL_TIME_LIMIT, ConfigError
from models import MODELS, DecisionTransformer, DTConfig, policy_from_checkpoint
from plumbing import progress, runfolder, signals
from plumbing.record import SeedRecord, check_finite_score
from plumbing.runfolder import Run

log = logging.getLogger(__name__)
utils.import_mujoco_without_opengl()  # OpenGL only for a video (film): a bad MUJOCO_GL fails no run without one
# The assignment fixes gymnasium's -v4 envs: their advice to move to -v5 is no news on every run.
warnings.filterwarnings("ignore", message=r".*The environment \w+-v4 is out of date", category=DeprecationWarning)
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)  # "No OpenGL_accelerate module": no news
# Env seeds of the evals: seed s runs its periodic evals on episodes seeded 1000 s, 1000 s + 1, ... and its
# final eval on 1000 s + 100 000, ...: other seeds' episodes, and no episode the periodic evals picked from.
EVAL_SEED_STRIDE, FINAL_EVAL_SEED_OFFSET = 1000, 100_000


class RolloutStopped(Exception):
    """A stop signal (its name: str(e)) arrived during a rollout that checks for one; its episodes are unfinished."""


# Training


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (mask = 1) steps. pred, target (B, K, d); mask (B, K)."""
    return (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum().clamp(min=1)


def losses(model: DecisionTransformer, batch: list[torch.Tensor], train_cfg: DictConfig,
           precision: str) -> dict[str, torch.Tensor]:
    """The named losses of a batch (train.csv's columns follow the names); "loss", their weighted sum, is trained.
    The auxiliary next-step predictions of step t count where step t + 1 is real (mask[:, 1:]), not padding."""
    states, actions, returns_to_go, timesteps, mask = batch  # (B, K, .) each; mask (B, K)
    weights = {"state_mse": train_cfg.aux_state_coef, "rtg_mse": train_cfg.aux_rtg_coef}
    # Raw states and actions go in: the model normalizes them itself (a checkpoint holds the statistics).
    with torch.autocast(states.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        preds = model(states, actions, returns_to_go, timesteps, predict_next=any(weights.values()))
    named = {"action_mse": masked_mse(preds["action"], actions, mask)}
    if weights["state_mse"]:  # s_{t+1} from the a_t token: (B, K-1, obs) against the next states
        named["state_mse"] = masked_mse(preds["next_state"][:, :-1], model.norm_state(states[:, 1:]), mask[:, 1:])
    if weights["rtg_mse"]:  # g_{t+1} from the a_t token: (B, K-1, 1)
        named["rtg_mse"] = masked_mse(preds["next_return"][:, :-1], returns_to_go[:, 1:], mask[:, 1:])
    loss = named["action_mse"]
    for name, value in list(named.items())[1:]:  # the auxiliary losses, weighted
        loss = loss + weights[name] * value
    return {"loss": loss, **named} if len(named) > 1 else {"loss": loss}


def train_step(model: DecisionTransformer, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, batch: list[torch.Tensor], train_cfg: DictConfig,
               precision: str) -> dict[str, torch.Tensor]:
    """Forward, the losses, backward, clip, AdamW; returns the detached named losses of `losses`."""
    step_losses = losses(model, batch, train_cfg, precision)
    optimizer.zero_grad(set_to_none=True)
    step_losses["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return {name: value.detach() for name, value in step_losses.items()}


def lr_scheduler(optimizer: torch.optim.Optimizer, train_cfg: DictConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup (lr / warmup_steps up to lr), then constant (the DT paper's) or a cosine to 0 at train.steps."""
    warmup, steps, cosine = train_cfg.warmup_steps, train_cfg.steps, train_cfg.lr_schedule == "cosine"

    def factor(s: int) -> float:
        if s + 1 < warmup or not cosine:
            return min(1.0, (s + 1) / warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s + 1 - warmup) / max(1, steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: DictConfig, seed: int, run: Run, show: progress.Bar | progress.Sender | None = None) -> dict:
    """Train one seed of `run` and evaluate it; returns final.json. Its SeedRecord keeps the metrics, checkpoints
    and policies, resumes from last.pt and reports to `show` (default: a bar)."""
    if (final := run.seed(seed).final()) is not None:
        log.info("seed %d already finished: score %.1f", seed, final["score_mean"])
        return final
    utils.seed_everything(seed)
    device = utils.pick_device(cfg.device)
    precision = utils.pick_precision(cfg.train.precision, device)
    env = gym.make(cfg.env.id)
    data = load_data(cfg, env)
    model = build_model(cfg, data, env).to(device)
    optimizer = model.configure_optimizer(cfg.train.lr, cfg.train.weight_decay)
    scheduler = lr_scheduler(optimizer, cfg.train)
    ema = models.EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    rng = np.random.default_rng(seed)
    record = SeedRecord(cfg, seed, run, model, optimizer, scheduler, rng, show or progress.Bar(), ema)  # or resumed
    log.info("seed %d: %d trajectories, %d steps, %s, device %s, %s, %d torch threads", seed, data.num_trajectories,
             len(data.rewards), utils.dataset_name(cfg), device, precision, torch.get_num_threads())
    with record:
        model.train()
        for step in range(record.step + 1, cfg.train.steps + 1):
            batch = utils.to_device(data.sample(cfg.train.batch_size, rng), device)  # (B, K, .) each
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            record.add_losses(train_step(model, optimizer, scheduler, batch, cfg.train, precision))
            if ema is not None:
                ema.update(model)
            record.log_when_due(step, lr)
            if record.eval_due(step):
                record.add_eval(step, periodic_eval(record.policy, cfg, seed, data))
            record.checkpoint_when_due(step)  # and on a stop signal, which then ends training (Interrupted)
        record.save_policy("final")
        final = record.finish(final_evaluation(record.policy, cfg, seed))
        if cfg.eval.video:
            record.save_video(film(record.policy, cfg, seed), env.metadata["render_fps"])
        return final


# Evaluation: one loop over `num_envs` envs in lockstep; a single env is num_envs=1.


@dataclass(frozen=True)
class RolloutSpec:
    """The episodes a rollout plays: `num_envs` envs of `env_id` in lockstep, env i seeded seed + i and conditioned
    on its target return (`targets`: one for all, or one per env) in env reward units, over `reward_scale` for the
    policy. time_limit: the episodes' limit (None: the env's, 1000 for D4RL's). record: the envs to film."""

    env_id: str
    num_envs: int
    seed: int
    targets: float | np.ndarray
    reward_scale: float
    time_limit: int | None = None
    record: tuple[int, ...] = ()

    @classmethod
    def of_run(cls, cfg: DictConfig, num_envs: int, seed: int, record: tuple[int, ...] = (),
               targets: float | np.ndarray | None = None) -> "RolloutSpec":
        """The run's episodes: its env, time limit, reward scale and, by default, target return."""
        return cls(cfg.env.id, num_envs, seed, cfg.eval.target_return if targets is None else targets,
                   cfg.buffer.reward_scale, cfg.env.max_episode_len, tuple(record))

    def make(self, i: int) -> gym.Env:
        """Env i of the rollout (rendering if it is filmed)."""
        film = {"render_mode": "rgb_array", "camera_name": "track"} if i in self.record else {}
        return gym.make(self.env_id, max_episode_steps=self.time_limit, **film)


class Episodes(NamedTuple):
    """What rollout played: per-episode returns and lengths (num_envs,), and {env: frames} of the recorded envs."""

    returns: np.ndarray
    lengths: np.ndarray  # env steps; shorter than the time limit: the episode ended in a fall (terminated)
    frames: dict[int, list[np.ndarray]]


@torch.inference_mode()
def rollout(policy: DecisionTransformer, spec: RolloutSpec, stop: Callable[[], str | None] | None = None) -> Episodes:
    """Play the episodes of `spec` in lockstep, each conditioned on its target return lowered by its own rewards.
    stop: called before each env step (signals.stop_requested); a signal's name it returns raises RolloutStopped."""
    num_envs = spec.num_envs
    envs = gym.vector.SyncVectorEnv([partial(spec.make, i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    max_len = envs.envs[0].spec.max_episode_steps
    device, K = policy.device, policy.context_len
    states = torch.zeros(num_envs, max_len, policy.state_dim, device=device)  # histories, (N, T, obs)
    actions = torch.zeros(num_envs, max_len, policy.act_dim, device=device)  # (N, T, act)
    returns_to_go = torch.zeros(num_envs, max_len, 1, device=device)  # (N, T, 1)
    timesteps = torch.arange(max_len, device=device).clamp(max=policy.last_timestep).expand(num_envs, max_len)  # (N, T)
    target_left = np.broadcast_to(np.asarray(spec.targets, dtype=np.float64), (num_envs,)) / spec.reward_scale  # (N,)
    episode_returns, lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=int)
    active = np.ones(num_envs, dtype=bool)
    frames = {i: [] for i in spec.record}
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
        action_preds = policy(states[running, window], actions[running, window], returns_to_go[running, window],
                              timesteps[running, window])["action"]  # (n, k, act)
        actions[running, t] = action_preds[:, -1]
        obs, reward, terminated, truncated, _ = envs.step(actions[:, t].cpu().numpy())
        episode_returns += reward * active  # reward counts only until each env is done
        lengths += active
        target_left = target_left - reward / spec.reward_scale
        active &= ~(terminated | truncated)
        if not active.any():
            break
    envs.close()
    return Episodes(episode_returns, lengths, frames)


def evaluate(policy: DecisionTransformer, spec: RolloutSpec, ref_scores: tuple[float, float],
             stop: Callable[[], str | None] | None = None) -> dict:
    """Mean/std return and normalized score (ref_scores: env.ref_min_score, ref_max_score) over the spec's episodes
    in one vectorized pass. stop: rollout's. Episodes shorter than D4RL's 1000 steps are scored off D4RL's scale."""
    returns = rollout(policy, spec, stop).returns
    scores = utils.normalized_score(returns, *ref_scores)
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "score_mean": float(scores.mean()), "score_std": float(scores.std())}


def periodic_eval(policy: DecisionTransformer, cfg: DictConfig, seed: int, data: SequenceBuffer) -> dict:
    """`cfg.eval.episodes` episodes of the policy (in eval mode for them), seeded by the seed. With buffer.holdout,
    also its action MSE on training and on held-out trajectories: does its fit to the data carry over?"""
    was_training = policy.training
    result = evaluate(policy.eval(), RolloutSpec.of_run(cfg, cfg.eval.episodes, EVAL_SEED_STRIDE * seed),
                      (cfg.env.ref_min_score, cfg.env.ref_max_score))
    if data.held_out is not None:
        result |= {"fit_action_mse": action_mse(policy, data), "holdout_action_mse": action_mse(policy, data.held_out)}
    policy.train(was_training)
    return result


@torch.no_grad()
def action_mse(policy: DecisionTransformer, data: SequenceBuffer, batches: int = 20, batch_size: int = 256) -> float:
    """The policy's action MSE on windows of `data` drawn by a fixed seed: the same windows at every eval."""
    rng, errors = np.random.default_rng(0), []
    for _ in range(batches):
        states, actions, returns_to_go, timesteps, mask = utils.to_device(data.sample(batch_size, rng), policy.device)
        errors.append(masked_mse(policy(states, actions, returns_to_go, timesteps)["action"], actions, mask).item())
    return float(np.mean(errors))


def final_evaluation(policy: DecisionTransformer, cfg: DictConfig, seed: int) -> dict:
    """The final evaluation: `eval.final_episodes` fresh episodes. On a stop signal, Interrupted at once: final.json
    is not written and last.pt (the last step) resumes to it."""
    started = time.time()
    try:
        result = evaluate(policy.eval(), RolloutSpec.of_run(cfg, cfg.eval.final_episodes, final_eval_seed(seed)),
                          (cfg.env.ref_min_score, cfg.env.ref_max_score), stop=signals.stop_requested)
    except RolloutStopped as e:
        raise signals.Interrupted(f"seed {seed} stopped by {e} during its final evaluation; its checkpoint of step "
                                    f"{cfg.train.steps} is kept, from which a resume repeats it") from None
    check_finite_score(result, seed, "the final evaluation")
    limit = cfg.env.max_episode_len
    note = "" if limit >= D4RL_TIME_LIMIT else (f" (episodes cut at env.max_episode_len={limit} steps: not the scale "
                                                f"of the references' {D4RL_TIME_LIMIT}-step episodes)")
    log.info("seed %d final (%d episodes): return %.1f +- %.1f, normalized score %.1f +- %.1f%s", seed,
             cfg.eval.final_episodes, result["return_mean"], result["return_std"], result["score_mean"],
             result["score_std"], note)
    return {"seed": seed, "episodes": cfg.eval.final_episodes, **result, "time_limit": limit,
            "final_eval_seconds": time.time() - started}


def final_eval_seed(seed: int) -> int:
    """The env seed of seed `seed`'s first final-eval episode (EVAL_SEED_STRIDE, FINAL_EVAL_SEED_OFFSET)."""
    return EVAL_SEED_STRIDE * seed + FINAL_EVAL_SEED_OFFSET


def film(policy: DecisionTransformer, cfg: DictConfig, seed: int) -> list[np.ndarray] | None:
    """The frames of the first final-eval episode; None, with one logged line naming MUJOCO_GL, where rendering
    fails. On a stop signal, Interrupted at once (final.json is written already)."""
    try:
        frames = rollout(policy, RolloutSpec.of_run(cfg, 1, final_eval_seed(seed), record=(0,)),
                         stop=signals.stop_requested).frames
    except RolloutStopped as e:
        raise signals.Interrupted(f"seed {seed} stopped by {e} during its video: its final scores are kept "
                                    f"(final.json), the video skipped") from None
    except Exception as e:  # OpenGL's errors have no common type
        log.error("seed %d: no video: rendering failed with MUJOCO_GL=%s (%s: %s); %s", seed,
                  os.environ.get("MUJOCO_GL"), type(e).__name__, e, utils.RENDERING_FIX)
        return None
    return frames[0]


def load_data(cfg: DictConfig, env: gym.Env) -> SequenceBuffer:
    """The SequenceBuffer of the run's dataset, checked against the env's spaces and action bounds."""
    return SequenceBuffer(load_transitions(cfg, env), cfg.buffer.context_len, cfg.buffer.reward_scale,
                          cfg.env.max_episode_len, cfg.buffer.sample_by, cfg.buffer.top_percent, cfg.buffer.holdout)


def build_model(cfg: DictConfig, data: SequenceBuffer, env: gym.Env) -> DecisionTransformer:
    """The configured model for this env's spaces, holding the dataset's state statistics and the action bounds."""
    config = DTConfig(env.observation_space.shape[0], env.action_space.shape[0], context_len=cfg.buffer.context_len,
                      max_timestep=cfg.env.max_episode_len, embed_dim=cfg.model.embed_dim,
                      n_layers=cfg.model.n_layers, n_heads=cfg.model.n_heads, dropout=cfg.model.dropout,
                      condition_on_return=cfg.model.condition_on_return)
    return MODELS[cfg.model.implementation](config, state_mean=data.state_mean, state_std=data.state_std,
                                            action_low=env.action_space.low, action_high=env.action_space.high)


def load_policy(path: str | Path, env_id: str | None = None, device: str | torch.device = "cpu") -> DecisionTransformer:
    """The policy of a best.pt / final.pt checkpoint, ready to evaluate; loading it runs no code."""
    checkpoint = runfolder.load_checkpoint(path)
    if env_id is not None and checkpoint["env_id"] != env_id:
        raise ConfigError(f"checkpoint {path} was trained on {checkpoint['env_id']}, not {env_id}: "
                          f"choose the matching env=<name>")
    return policy_from_checkpoint(checkpoint).to(device)
