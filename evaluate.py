"""Evaluate a run's saved policies over a sweep of target returns-to-go: does the return follow the target?

    python evaluate.py run=runs/<date>/<time>                          # each seed's final.pt, default targets
    python evaluate.py run=runs/<date>/<time> checkpoint=best targets=[1000,2000,3000] episodes=20 video=true
    python evaluate.py run=runs/<date>/<time> targets=[3000] episodes=100 name=target_3000   # beside the sweep

All targets and episodes of a seed run in one vectorized pass (targets x episodes envs in lockstep, each with
its own return-to-go). Writes into the run folder, as <name> (default sweep_<checkpoint>): <name>.csv (a row per
seed, target and episode), <name>.png (achieved against target normalized score) and, with video=true, one
episode per target: seed<N>/<name>_<target>.mp4. Each seed's rows are kept as soon as its pass ends
(seed<N>/<name>.json): a stopped sweep, started again, reuses the seeds it finished.
"""
import logging
import time
from pathlib import Path

import gymnasium as gym
import hydra
import numpy as np
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

import core
import utils
from buffer import DatasetError, dataset_identity, top_trajectories
from cfgs import schema
from cfgs.schema import ConfigError, EvaluateConfig
from main import cli
from utils import Run, RunError

log = logging.getLogger(__name__)
SWEEP_SEED_OFFSET = 200_000  # env seeds of seed s's sweep: 1000 s + 200 000 + i, apart from its training evals
DEFAULT_TARGETS = np.linspace(0.25, 1.5, 8)  # times the env's target return


def existing_run(folder):
    """hydra.run.dir of evaluate.py: the run folder itself, which must hold a run (nothing is created)."""
    if not Run(folder).holds_run():
        raise ConfigError(f"run={folder}: no run there (no config.yaml); give a run folder such as "
                          f"run=runs/<date>/<time>")
    return folder


OmegaConf.register_new_resolver("existing_run", existing_run, use_cache=True, replace=True)


def dataset_returns(train_cfg, env):
    """The returns of the run's dataset's trajectories (its recorded file, else the file env + dataset name)."""
    if train_cfg.buffer.file and not Path(train_cfg.buffer.file).exists():
        log.warning("%s (the run's dataset file) is not here: the data's returns come from the file of %s-%s",
                    train_cfg.buffer.file, train_cfg.env.name, train_cfg.buffer.dataset)
        train_cfg = OmegaConf.merge(train_cfg, {"buffer": {"file": None}})
    else:
        warn_if_dataset_changed(train_cfg.buffer)
    return core.load_transitions(train_cfg, env).trajectories()[2]


def warn_if_dataset_changed(buffer_cfg):
    """A warning when the run's dataset file is not the one it trained on (its recorded SHA-256)."""
    try:
        dataset_identity(buffer_cfg.file, buffer_cfg.sha256)
    except DatasetError as e:
        log.warning("%s: the data's returns shown are the file's of today", e)


def sweep_targets(cfg, train_cfg, data_returns):
    """The configured targets, or 8 from 0.25x to 1.5x the env's target return and the data's best return."""
    if cfg.targets is not None:
        schema.check_return_to_go("targets", cfg.targets, train_cfg.buffer.reward_scale)
        return np.array(cfg.targets, dtype=np.float64)
    return np.unique(np.append(DEFAULT_TARGETS * train_cfg.env.target_return, data_returns.max()).round(1))


def sweep_seed(model, train_cfg, seed, targets, episodes, record):
    """One vectorized pass: returns (len(targets), episodes) and the recorded envs' frames."""
    conditions = np.repeat(targets, episodes)  # env j is conditioned on targets[j // episodes]
    returns, frames = core.rollout(model, train_cfg.env.id, len(conditions),
                                   core.EVAL_SEED_STRIDE * seed + SWEEP_SEED_OFFSET, conditions,
                                   train_cfg.buffer.reward_scale, record, train_cfg.env.max_episode_len)
    return returns.reshape(len(targets), episodes), frames


def refuse_replacing_sweep(run, cfg, targets):
    """ConfigError when the run holds a sweep named cfg.name made with other targets or episodes (unless
    overwrite=true): a quick check never replaces a stored sweep."""
    if cfg.overwrite:
        return
    wanted = ([float(t) for t in targets], cfg.episodes)
    for seed in run.seeds():
        kept = run.sweep_part(seed, cfg.name)
        if kept and (kept["settings"]["targets"], kept["settings"]["episodes"]) != wanted:
            raise ConfigError(f"name={cfg.name}: the run holds a sweep of that name with other targets or episodes "
                              f"({cfg.name}.csv): give a new name=<name>, or overwrite=true to replace it")


def sweep_settings(policy_path, targets, cfg, videos):
    """What a seed's sweep depends on: its policy file's bytes, the targets, episodes, device and videos."""
    return {"policy_sha256": utils.file_sha256(policy_path), "targets": [float(t) for t in targets],
            "episodes": cfg.episodes, "device": cfg.device, "videos": videos}


def evaluate_run(cfg):
    """The sweep of cfg.run: its CSV and figure in the run folder; returns the rows."""
    run = Run(to_absolute_path(cfg.run))
    train_cfg = schema.typed(schema.upgrade(OmegaConf.load(run.config_path())))
    OmegaConf.resolve(train_cfg)
    name = f"{cfg.checkpoint}.pt"
    seeds = [s for s in run.seeds() if run.policy_path(s, name).exists()]
    if not seeds:
        raise ConfigError(f"run={cfg.run}: no seed<N>/{name} there; evaluate a run that has trained "
                          f"(best.pt is written at its first eval, final.pt at its end)")
    env = gym.make(train_cfg.env.id)
    data_returns = dataset_returns(train_cfg, env)
    targets = sweep_targets(cfg, train_cfg, data_returns)
    refuse_replacing_sweep(run, cfg, targets)
    score = lambda r: utils.normalized_score(r, train_cfg.env.ref_min_score, train_cfg.env.ref_max_score)  # noqa
    record = [i * cfg.episodes for i in range(len(targets))] if cfg.video else []  # each target's first episode
    started, rows, reused = time.time(), [], []
    for seed in seeds:
        path = run.policy_path(seed, name)
        videos = [f"{cfg.name}_{targets[i // cfg.episodes]:g}.mp4" for i in record]
        settings = sweep_settings(path, targets, cfg, videos)
        kept = run.sweep_part(seed, cfg.name)
        if kept and kept["settings"] == settings and run.has_files(seed, videos):
            rows += kept["rows"]
            reused.append(seed)
            log.info("seed %d: reused seed%d/%s.json (same policy, targets and episodes)", seed, seed, cfg.name)
            continue
        model = core.load_policy(path, train_cfg.env.id, utils.pick_device(cfg.device))
        returns, frames = sweep_seed(model, train_cfg, seed, targets, cfg.episodes, record)
        seed_rows = [{"seed": seed, "target": float(target), "episode": episode, "return": float(r),
                      "score": float(score(r))}
                     for target, episode_returns in zip(targets, returns) for episode, r in enumerate(episode_returns)]
        for i, video in zip(record, videos):
            run.save_video(seed, video, frames[i], fps=env.metadata["render_fps"])
        run.save_sweep_part(seed, cfg.name, {"settings": settings, "rows": seed_rows})
        rows += seed_rows
        log.info("seed %d: %s", seed, ", ".join(f"{t:g} -> {score(r.mean()):.1f}" for t, r in zip(targets, returns)))
    seconds = time.time() - started
    run.save_table(f"{cfg.name}.csv", rows)
    trained = top_trajectories(data_returns, train_cfg.buffer.top_percent)
    utils.plot_sweep(rows, score(data_returns), score, f"{utils.run_title(train_cfg)}   ({run.name}, {name})",
                     run.dir / f"{cfg.name}.png", None if trained.all() else score(data_returns[trained]))
    log.info("%d targets x %d episodes x %d seeds in %.0f s%s: %s/%s.csv", len(targets), cfg.episodes,
             len(seeds) - len(reused), seconds, f" ({len(reused)} reused)" if reused else "", run.name, cfg.name)
    return rows


@hydra.main(config_path="cfgs", config_name="evaluate", version_base="1.3")
def main(cfg):
    try:
        schema.check_fields(EvaluateConfig, cfg)
        schema.refuse_run_file_name(cfg.name)
        if cfg.targets is not None and not (len(cfg.targets) and all(np.isfinite(cfg.targets))):
            raise ConfigError(f"targets={list(cfg.targets)}: give finite returns, e.g. targets=[1000,2000]")
        evaluate_run(cfg)
    except (ConfigError, DatasetError, RunError) as e:
        log.error("%s", e)
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    cli(main)
