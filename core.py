"""Training and evaluation of one seed: batches -> masked action MSE -> AdamW; periodic evals."""
import importlib
import json
import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for the video

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import utils
from buffer import SAMPLE_BY, ReplayBuffer, SequenceBuffer, dataset_file, find_dataset

log = logging.getLogger(__name__)
# Env seeds of the evals: seed s runs its periodic evals on episodes seeded 1000 s, 1000 s + 1, ... and its
# final eval on 1000 s + 100 000, ...: other seeds' episodes, and no episode the periodic evals picked from.
EVAL_SEED_STRIDE, FINAL_EVAL_SEED_OFFSET = 1000, 100_000


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what is allowed."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def check_config(cfg):
    """Fail before any work starts on values that cannot work."""
    positive = {"train.steps": cfg.train.steps, "train.batch_size": cfg.train.batch_size,
                "buffer.context_len": cfg.buffer.context_len, "eval.episodes": cfg.eval.episodes,
                "eval.final_episodes": cfg.eval.final_episodes, "train.log_every": cfg.train.log_every,
                "train.eval_every": cfg.train.eval_every, "train.checkpoint_every": cfg.train.checkpoint_every,
                "buffer.reward_scale": cfg.buffer.reward_scale, "train.warmup_steps": cfg.train.warmup_steps,
                "model.n_heads": cfg.model.n_heads, "model.embed_dim": cfg.model.embed_dim}
    for field, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{field}={value}: must be a positive number")
    if cfg.buffer.context_len > cfg.env.max_episode_len:
        raise ConfigError(f"buffer.context_len={cfg.buffer.context_len}: must be at most the env's "
                          f"max_episode_len={cfg.env.max_episode_len}")
    if cfg.model.embed_dim % cfg.model.n_heads:
        raise ConfigError(f"model.n_heads={cfg.model.n_heads}: must divide model.embed_dim={cfg.model.embed_dim}")
    if cfg.buffer.path and not Path(cfg.buffer.path).is_file():
        raise ConfigError(f"buffer.path={cfg.buffer.path}: no such file")
    for field in ("eval_every", "checkpoint_every"):  # so that no checkpoint holds an unchecked loss
        if cfg.train[field] % cfg.train.log_every:
            raise ConfigError(f"train.{field}={cfg.train[field]}: must be a multiple of "
                              f"train.log_every={cfg.train.log_every}")
    if not 0 < cfg.buffer.top_percent <= 100:
        raise ConfigError(f"buffer.top_percent={cfg.buffer.top_percent}: must be in (0, 100]")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout={cfg.model.dropout}: must be in [0, 1)")
    if cfg.buffer.sample_by not in SAMPLE_BY:
        raise ConfigError(f"buffer.sample_by={cfg.buffer.sample_by}: choose one of {', '.join(SAMPLE_BY)}")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device}: choose auto, cpu, cuda or cuda:<index>")
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device}: torch sees no CUDA GPU here; use device=auto or device=cpu")
    if not cfg.buffer.path:
        dataset_file(cfg.env.name, cfg.buffer.dataset)  # raises DatasetError listing the choices
    if not isinstance(cfg.seeds, Sequence) or not cfg.seeds or not all(isinstance(s, int) for s in cfg.seeds):
        raise ConfigError(f"seeds={cfg.seeds}: give a list of integer seeds, e.g. seeds=[0] or seeds=[0,1,2]")
    try:
        import_class(cfg.model.implementation)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"model.implementation={cfg.model.implementation}: {e}; use models.DecisionTransformer "
                          f"(or bench.ReferenceDT)") from None


def run_title(cfg):
    """'hopper-medium', or the env and the file name for buffer.path."""
    return f"{cfg.env.name}-{Path(cfg.buffer.path).stem if cfg.buffer.path else cfg.buffer.dataset}"


def masked_mse(pred, target, mask):
    """Mean squared error over the real (mask = 1) steps. pred, target (B, K, d); mask (B, K)."""
    return (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Evaluation: one loop over `num_envs` envs in lockstep; a single env is num_envs=1.


@torch.inference_mode()
def rollout(model, env_id, num_envs, seed, target_return, reward_scale, record_video=False):
    """Run `num_envs` episodes in lockstep, conditioning on `target_return`.

    Returns per-episode returns (num_envs,) and, with record_video, the frames of env 0.
    """
    render = ["rgb_array" if record_video and i == 0 else None for i in range(num_envs)]
    envs = gym.vector.SyncVectorEnv([partial(gym.make, env_id, render_mode=r) for r in render],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    max_len = envs.envs[0].spec.max_episode_steps
    device, K = model.state_mean.device, model.context_len
    states = torch.zeros(num_envs, max_len, model.state_dim, device=device)  # histories, (N, T, obs)
    actions = torch.zeros(num_envs, max_len, model.act_dim, device=device)  # (N, T, act)
    returns_to_go = torch.zeros(num_envs, max_len, 1, device=device)  # (N, T, 1)
    last_timestep = model.embed_timestep.num_embeddings - 1  # clipped as in training
    timesteps = torch.arange(max_len, device=device).clamp(max=last_timestep).expand(num_envs, max_len)  # (N, T)
    target_left = np.full(num_envs, target_return / reward_scale)  # the return still to collect, scaled
    episode_returns = np.zeros(num_envs)
    active = np.ones(num_envs, dtype=bool)
    frames = []
    obs, _ = envs.reset(seed=seed)
    for t in range(max_len):
        if record_video and active[0]:
            frames.append(envs.envs[0].render())
        states[:, t] = torch.as_tensor(obs, dtype=torch.float32, device=device)
        returns_to_go[:, t, 0] = torch.as_tensor(target_left, dtype=torch.float32, device=device)
        rows = torch.as_tensor(np.flatnonzero(active), device=device)  # (n,) the envs still running
        window = slice(max(0, t - K + 1), t + 1)  # the last k <= K steps
        # All envs are at step t, so the window needs no padding; finished envs are left out.
        action_preds, _, _ = model(states[rows, window], actions[rows, window],
                                   returns_to_go[rows, window], timesteps[rows, window])  # (n, k, act)
        actions[rows, t] = action_preds[:, -1]
        obs, reward, terminated, truncated, _ = envs.step(actions[:, t].cpu().numpy())
        episode_returns += reward * active  # reward counts only until each env is done
        target_left -= reward / reward_scale
        active &= ~(terminated | truncated)
        if not active.any():
            break
    envs.close()
    return episode_returns, frames


def evaluate(model, cfg, episodes, seed, vectorized=True):
    """Mean/std return and normalized D4RL score over `episodes` episodes seeded seed, seed+1, ..."""
    play = partial(rollout, model, cfg.env.id, target_return=cfg.eval.target_return,
                   reward_scale=cfg.buffer.reward_scale)
    if vectorized:
        returns, _ = play(num_envs=episodes, seed=seed)
    else:
        returns = np.concatenate([play(num_envs=1, seed=seed + i)[0] for i in range(episodes)])
    scores = utils.normalized_score(returns, cfg.env.ref_min_score, cfg.env.ref_max_score)
    return {"return_mean": returns.mean(), "return_std": returns.std(),
            "score_mean": scores.mean(), "score_std": scores.std()}


# ---------------------------------------------------------------------------------------------
# Building blocks of a run


def space_dims(env):
    return env.observation_space.shape[0], env.action_space.shape[0]


def locate_dataset(cfg):
    """buffer.path, or the D4RL file of env + dataset (downloaded when missing)."""
    return cfg.buffer.path or find_dataset(cfg.env.name, cfg.buffer.dataset, *space_dims(gym.make(cfg.env.id)))


def load_data(cfg, env):
    """The SequenceBuffer of the run's dataset file, checked against the env's spaces."""
    replay = ReplayBuffer.from_hdf5(cfg.buffer.file or locate_dataset(cfg), *space_dims(env))
    return SequenceBuffer(replay, cfg.buffer.context_len, cfg.buffer.reward_scale, cfg.env.max_episode_len,
                          cfg.buffer.sample_by, cfg.buffer.top_percent)


def model_kwargs(cfg, data, env):
    """Everything needed to rebuild the model from a checkpoint alone."""
    state_dim, act_dim = space_dims(env)
    return dict(state_dim=state_dim, act_dim=act_dim, context_len=cfg.buffer.context_len,
                max_timestep=cfg.env.max_episode_len,
                embed_dim=cfg.model.embed_dim, n_layers=cfg.model.n_layers, n_heads=cfg.model.n_heads,
                dropout=cfg.model.dropout, state_mean=data.state_mean.tolist(), state_std=data.state_std.tolist(),
                action_low=env.action_space.low.tolist(), action_high=env.action_space.high.tolist())


def import_class(path):
    """'models.DecisionTransformer' -> the class."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def save_policy(model, kwargs, cfg, path):
    utils.atomic_torch_save({"env_id": cfg.env.id, "model_class": cfg.model.implementation, "model_kwargs": kwargs,
                             "model": model.state_dict()}, path)


def load_policy(path, env_id=None, device="cpu"):
    """The policy of a best.pt / final.pt checkpoint, ready to evaluate."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if env_id is not None and ckpt["env_id"] != env_id:
        raise ConfigError(f"checkpoint {path} was trained on {ckpt['env_id']}, not {env_id}: "
                          f"choose the matching env=<name>")
    model = import_class(ckpt.get("model_class", "models.DecisionTransformer"))(**ckpt["model_kwargs"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def save_training_state(path, model, optimizer, scheduler, rng, progress):
    """Everything a resumed run needs to continue exactly: weights, optimizer, schedule, RNGs, progress."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "progress": progress}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    utils.atomic_torch_save(state, path)


def load_training_state(path, model, optimizer, scheduler, rng):
    """Restore what save_training_state wrote; return the progress dict."""
    state = torch.load(path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["progress"]


def warmup_scheduler(optimizer, warmup_steps):
    """Linear warmup from lr / warmup_steps to lr, then constant (the DT paper's schedule)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps))


def plot_run(cfg, run_dir):
    """The run's results.png from its seeds' metrics so far."""
    utils.plot_results(run_dir, run_title(cfg), cfg.eval.target_return, cfg.env.ref_min_score, cfg.env.ref_max_score)


def to_device(arrays, device):
    """numpy arrays -> tensors on `device`; to a GPU from pinned memory, without waiting for its running steps."""
    tensors = [torch.from_numpy(x) for x in arrays]
    if device.type == "cuda":  # a plain copy would block the host until the GPU's queue is empty
        return [t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return tensors


def train_step(model, optimizer, scheduler, batch, cfg):
    """Forward, masked action MSE (+ the auxiliary losses), backward, clip, AdamW; returns the loss."""
    states, actions, returns_to_go, timesteps, mask = batch  # (B, K, .) each; mask (B, K)
    with torch.autocast(states.device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
        predict_next = bool(cfg.train.aux_state_coef or cfg.train.aux_rtg_coef)
        action_preds, state_preds, return_preds = model(states, actions, returns_to_go, timesteps, predict_next)
    loss = masked_mse(action_preds, actions, mask)
    if cfg.train.aux_state_coef:  # s_{t+1} from the a_t token: (B, K-1, obs) against the next states
        loss = loss + cfg.train.aux_state_coef * masked_mse(
            state_preds[:, :-1], model.norm_state(states[:, 1:]), mask[:, 1:])
    if cfg.train.aux_rtg_coef:  # g_{t+1} from the a_t token: (B, K-1, 1)
        loss = loss + cfg.train.aux_rtg_coef * masked_mse(return_preds[:, :-1], returns_to_go[:, 1:], mask[:, 1:])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def train(cfg, seed, run_dir):
    """Train one seed; write seed<seed>/ (metrics, checkpoints, video) under run_dir; resume if stopped."""
    seed_dir = Path(run_dir) / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    if (seed_dir / "final.json").exists():
        log.info("seed %d already finished: %s", seed, seed_dir / "final.json")
        return json.loads((seed_dir / "final.json").read_text())
    utils.seed_everything(seed)
    device = utils.pick_device(cfg.device)
    env = gym.make(cfg.env.id)
    data = load_data(cfg, env)
    kwargs = model_kwargs(cfg, data, env)
    model = import_class(cfg.model.implementation)(**kwargs).to(device)
    optimizer = model.configure_optimizer(cfg.train.lr, cfg.train.weight_decay)
    scheduler = warmup_scheduler(optimizer, cfg.train.warmup_steps)
    rng = np.random.default_rng(seed)
    last_ckpt = seed_dir / "last.pt"
    progress = {"step": 0, "best_score": -np.inf, "train": [], "eval": [], "seconds": 0.0}
    if last_ckpt.exists():
        progress = load_training_state(last_ckpt, model, optimizer, scheduler, rng)
        log.info("seed %d: resumed from %s at step %d", seed, last_ckpt, progress["step"])
    log.info("seed %d: %d trajectories, %d steps, %s, device %s, %d torch threads", seed, data.num_trajectories,
             len(data.rewards), cfg.buffer.path or cfg.buffer.dataset, device, torch.get_num_threads())

    started, seconds_before = time.time(), progress["seconds"]
    loss_sum = torch.zeros((), device=device)
    model.train()
    bar = tqdm(total=cfg.train.steps, initial=progress["step"], desc=f"seed {seed}", mininterval=2, disable=None)
    for step in range(progress["step"] + 1, cfg.train.steps + 1):
        batch = to_device(data.sample(cfg.train.batch_size, rng), device)  # (B, K, .) each
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        loss_sum += train_step(model, optimizer, scheduler, batch, cfg)
        bar.update()
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:  # the last interval may be shorter
            logged_before = progress["train"][-1]["step"] if progress["train"] else 0
            mean_loss = loss_sum.item() / (step - logged_before)  # one host sync per log interval
            loss_sum.zero_()
            if not np.isfinite(mean_loss):
                kept = f"the last good state is in {last_ckpt}" if last_ckpt.exists() else "no checkpoint yet"
                raise NonFiniteLossError(
                    f"seed {seed}: the loss became {mean_loss} before step {step} ({kept}). Start a new run with "
                    f"a lower train.lr or train.grad_clip (a resumed run keeps its config and would reach the "
                    f"same loss), or check the dataset for bad values")
            progress["train"].append({"step": step, "loss": mean_loss, "lr": lr})
            bar.set_postfix(loss=f"{mean_loss:.4f}")
        evaluated = step % cfg.train.eval_every == 0 or step == cfg.train.steps
        if evaluated:
            model.eval()
            result = evaluate(model, cfg, cfg.eval.episodes, EVAL_SEED_STRIDE * seed, cfg.eval.vectorized)
            model.train()
            progress["eval"].append({"step": step, **result})
            log.info("seed %d step %d: loss %.4f, return %.1f +- %.1f, normalized score %.1f", seed, step,
                     progress["train"][-1]["loss"] if progress["train"] else float("nan"),
                     result["return_mean"], result["return_std"], result["score_mean"])
            if result["score_mean"] > progress["best_score"]:
                progress["best_score"] = result["score_mean"]
                save_policy(model, kwargs, cfg, seed_dir / "best.pt")
        if evaluated or step % cfg.train.checkpoint_every == 0:
            progress.update(step=step, seconds=seconds_before + time.time() - started)
            utils.write_csv(progress["train"], seed_dir / "train.csv")
            utils.write_csv(progress["eval"], seed_dir / "eval.csv")
            save_training_state(last_ckpt, model, optimizer, scheduler, rng, progress)
            plot_run(cfg, run_dir)
    bar.close()
    return finish(model, kwargs, cfg, env, seed, seed_dir, seconds_before + time.time() - started)


def finish(model, kwargs, cfg, env, seed, seed_dir, train_seconds):
    """The final 100-episode evaluation, final.pt, the video and final.json."""
    model.eval()
    save_policy(model, kwargs, cfg, seed_dir / "final.pt")
    started, final_seed = time.time(), EVAL_SEED_STRIDE * seed + FINAL_EVAL_SEED_OFFSET
    result = evaluate(model, cfg, cfg.eval.final_episodes, seed=final_seed, vectorized=cfg.eval.vectorized)
    result = {k: float(v) for k, v in result.items()}
    summary = {"seed": seed, "episodes": cfg.eval.final_episodes, **result,
               "train_seconds": train_seconds, "final_eval_seconds": time.time() - started}
    utils.atomic_write_bytes(seed_dir / "final.json", json.dumps(summary, indent=2).encode())
    if cfg.eval.video:
        try:
            _, frames = rollout(model, cfg.env.id, 1, final_seed, cfg.eval.target_return, cfg.buffer.reward_scale,
                                record_video=True)
            utils.save_video(frames, seed_dir / "video.mp4", fps=env.metadata["render_fps"])
        except Exception as e:  # the scores stand without the video
            log.error("seed %d: no video (%s); headless rendering needs MUJOCO_GL=egl or osmesa", seed, e)
    log.info("seed %d final (%d episodes): return %.1f +- %.1f, normalized score %.1f +- %.1f", seed,
             cfg.eval.final_episodes, result["return_mean"], result["return_std"], result["score_mean"],
             result["score_std"])
    return summary
