"""Evaluate a run's saved policies over a sweep of target returns-to-go: does the return follow the target?

    python evaluate.py run=runs/<date>/<time>                          # each seed's final.pt, default targets
    python evaluate.py run=runs/<date>/<time> checkpoint=best targets=[1000,2000,3000] episodes=20 video=true
    python evaluate.py run=runs/<date>/<time> targets=[3000] episodes=100 name=target_3000   # beside the sweep
    python evaluate.py run=runs/<date>/<time> export=true            # each seed's policy as one ONNX file

All targets and episodes of a seed run in one vectorized pass. Writes into the run folder (a gallery/ run: into
runs/evaluate/<its name>; out=<folder>: there) <name>.csv (a row per seed, target and episode), <name>.png and, with
video=true, seed<N>/<name>_<target>.mp4; a seed's rows as its pass ends, so a stopped sweep goes on from there.
"""
from plumbing import threads  # noqa: I001  first, before torch loads: it sets OpenMP's wait policy

import logging
import os
import signal
import sys
import time
from pathlib import Path

import gymnasium as gym
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf
from tqdm import tqdm

import buffer
import core
from tools import export
from plumbing import launch, signals
import utils
from plumbing.sources import DatasetError, dataset_identity, hash_file, run_dataset_files
from cfgs import schema
from cfgs.schema import ConfigError, EvaluateConfig
from plumbing.runfolder import Run, RunError

log = logging.getLogger(__name__)
SWEEP_SEED_OFFSET = 200_000  # env seeds of seed s's sweep: 1000 s + 200 000 + i, apart from its training evals
DEFAULT_TARGETS = np.linspace(0.25, 1.5, 8)  # times the env's target return
SWEEP_ROWS = "seed, target, episode, return, score, length"  # a kept sweep part with other columns is redone
GALLERY = Path(__file__).resolve().parent / "gallery"  # tracked runs: their evaluations go under runs/evaluate/


def existing_run(folder):
    """hydra.run.dir of evaluate.py: where it writes for the run in `folder` (output_folder), which must hold a run."""
    if not Run(folder).holds_run():
        raise ConfigError(f"run={folder}: no run there (no config.yaml); give a run folder such as "
                          f"run=runs/<date>/<time>")
    return str(output_folder(folder))


def output_folder(run_folder, gallery=GALLERY):
    """The run's own folder, but runs/evaluate/<path below gallery/> for a run of the gallery (tracked files stay)."""
    path = Path(os.path.abspath(run_folder))
    return Path("runs", "evaluate", path.relative_to(gallery)) if path.is_relative_to(gallery) else Path(run_folder)


def output_option(args):
    """The command line `args` with evaluate.py's out=<folder> (where the outputs go) as hydra.run.dir=<folder>."""
    return [f"hydra.run.dir={launch.quoted(arg.split('=', 1)[1])}" if arg.startswith("out=") else arg for arg in args]


def dataset_returns(train_cfg, env):
    """The returns of the run's dataset's trajectories: its recorded files, else the same D4RL files in this
    machine's D4RL folder (a warning when they are not the run's); None when neither is here."""
    recorded = train_cfg.buffer.files
    if recorded and not all(Path(f).exists() for f in recorded):
        found = run_dataset_files(train_cfg.buffer)
        if found is None:
            log.warning("%s (the run's dataset) is not here: evaluating without it; the figure leaves out the "
                        "data's range", " + ".join(recorded))
            return None
        log.warning("%s (the run's dataset) is not here: the data's returns come from %s", " + ".join(recorded),
                    " + ".join(map(str, found)))
        train_cfg = OmegaConf.merge(train_cfg, {"buffer": {"files": [str(f) for f in found]}})
    try:
        dataset_identity(train_cfg.buffer.files, train_cfg.buffer.sha256)
    except DatasetError as e:
        log.warning("%s: the data's returns shown are the file's of today", e)
    today = OmegaConf.merge(train_cfg, {"buffer": {"sha256": None}})  # the files as they are today (warned)
    return buffer.load_transitions(today, env).trajectories()[2]


def sweep_targets(cfg, train_cfg, data_returns):
    """The configured targets, or 8 from 0.25x to 1.5x the env's target return and the data's best return."""
    if cfg.targets is not None:
        schema.check_return_to_go("targets", cfg.targets, train_cfg.buffer.reward_scale)
        return np.array(cfg.targets, dtype=np.float64)
    best = [] if data_returns is None else [data_returns.max()]
    return np.unique(np.append(DEFAULT_TARGETS * train_cfg.env.target_return, best).round(1))


def refuse_replacing_sweep(run, out, cfg, targets):
    """ConfigError when `out` holds a sweep named cfg.name of other targets or episodes (unless overwrite=true)."""
    if cfg.overwrite:
        return
    wanted = ([float(t) for t in targets], cfg.episodes)
    for seed in run.seeds():
        kept = out.seed(seed).sweep_part(cfg.name)
        if kept and (kept["settings"]["targets"], kept["settings"]["episodes"]) != wanted:
            raise ConfigError(f"name={cfg.name}: the run holds a sweep of that name with other targets or episodes "
                              f"({cfg.name}.csv): give a new name=<name>, or overwrite=true to replace it")


def seeds_with(run, cfg):
    """The run's seeds that have the policy file cfg.checkpoint names; ConfigError when none has."""
    seeds = [s for s in run.seeds() if run.seed(s).policy_path(cfg.checkpoint).exists()]
    if not seeds:
        raise ConfigError(f"run={cfg.run}: no seed<N>/{cfg.checkpoint}.pt there; evaluate a run that has trained "
                          f"(best.pt is written at its first eval, final.pt at its end)")
    return seeds


def evaluate_run(cfg, out_folder=None):
    """The sweep of cfg.run: its CSV and figure in out_folder (default: output_folder's); returns the rows."""
    run, out = Run(to_absolute_path(cfg.run)), Run(out_folder or output_folder(to_absolute_path(cfg.run)))
    train_cfg = run.config()
    seeds = seeds_with(run, cfg)
    env = gym.make(train_cfg.env.id)
    data_returns = dataset_returns(train_cfg, env)
    targets = sweep_targets(cfg, train_cfg, data_returns)
    refuse_replacing_sweep(run, out, cfg, targets)
    score = lambda r: utils.normalized_score(r, train_cfg.env.ref_min_score, train_cfg.env.ref_max_score)  # noqa
    record = [i * cfg.episodes for i in range(len(targets))] if cfg.video else []  # each target's first episode
    conditions = np.repeat(targets, cfg.episodes)  # env j is conditioned on targets[j // episodes]
    started, rows, reused = time.time(), [], []
    bar = tqdm(total=len(seeds) * len(targets) * cfg.episodes, desc=f"{len(targets)} targets x {cfg.episodes} "
               f"episodes x {len(seeds)} seeds", unit="episode", disable=None)
    for seed in seeds:
        path, folder = run.seed(seed).policy_path(cfg.checkpoint), out.seed(seed)
        videos = [f"{cfg.name}_{targets[i // cfg.episodes]:g}.mp4" for i in record]
        settings = {"policy_sha256": hash_file(path), "targets": [float(t) for t in targets], "episodes": cfg.episodes,
                    "device": cfg.device, "videos": videos, "rows": SWEEP_ROWS}  # what the sweep depends on
        kept = folder.sweep_part(cfg.name)
        if kept and kept["settings"] == settings and all(folder.video_path(v).exists() for v in videos):
            reused.append(seed)
            log.info("seed %d: reused %s (same policy, targets and episodes)", seed,
                     folder.sweep_path(cfg.name).relative_to(out.dir))
        else:
            model = core.load_policy(path, train_cfg.env.id, utils.pick_device(cfg.device))
            log.info("seed %d: %d targets x %d episodes, one pass of %d envs", seed, len(targets), cfg.episodes,
                     len(targets) * cfg.episodes)
            played = core.rollout(model, core.RolloutSpec.of_run(
                train_cfg, len(conditions), core.EVAL_SEED_STRIDE * seed + SWEEP_SEED_OFFSET, tuple(record),
                targets=conditions))
            for i, video in zip(record, videos):
                folder.save_video(played.frames[i], env.metadata["render_fps"], video)
            kept = {"settings": settings, "rows": [
                {"seed": seed, "target": float(conditions[j]), "episode": j % cfg.episodes, "return": float(r),
                 "score": float(score(r)), "length": int(n)}
                for j, (r, n) in enumerate(zip(played.returns, played.lengths))]}
            folder.save_sweep_part(cfg.name, kept)
            returns = played.returns.reshape(len(targets), cfg.episodes)
            log.info("seed %d: %s", seed, ", ".join(f"{t:g} -> {score(r.mean()):.1f}"
                                                    for t, r in zip(targets, returns)))
        rows += kept["rows"]
        bar.update(len(targets) * cfg.episodes)
    bar.close()
    seconds = time.time() - started
    out.save_table(f"{cfg.name}.csv", rows)
    title = f"{utils.run_title(train_cfg)}   ({run.name}, {run.seed(seeds[0]).policy_path(cfg.checkpoint).name})"
    data_scores = trained_scores = None
    if data_returns is not None:  # the data's range, and the part trained on if only some
        data_scores, trained = score(data_returns), buffer.top_trajectories(data_returns, train_cfg.buffer.top_percent)
        trained_scores = None if trained.all() else data_scores[trained]
    utils.plot_sweep(rows, data_scores, score, title, out.dir / f"{cfg.name}.png", trained_scores)
    log.info("%d targets x %d episodes x %d seeds in %.0f s%s: %s", len(targets), cfg.episodes,
             len(seeds) - len(reused), seconds, f" ({len(reused)} reused)" if reused else "",
             out.dir / f"{cfg.name}.csv")
    return rows


def export_run(cfg, out_folder=None):
    """Each seed's policy (cfg.checkpoint) as one ONNX file (tools/export.py) in the output folder; returns them."""
    run, out = Run(to_absolute_path(cfg.run)), Run(out_folder or output_folder(to_absolute_path(cfg.run)))
    train_cfg = run.config()
    paths = []
    for seed in seeds_with(run, cfg):
        policy = core.load_policy(run.seed(seed).policy_path(cfg.checkpoint))
        try:
            data = export.export_policy(policy, export.run_facts(policy, train_cfg))
        except ImportError as e:
            raise ConfigError(str(e)) from None
        paths.append(out.seed(seed).policy_path(cfg.checkpoint, export.SUFFIX))
        utils.atomic_write_bytes(paths[-1], data)
        log.info("seed %d: %s", seed, paths[-1])
    return paths


@hydra.main(config_path="cfgs", config_name="evaluate", version_base="1.3")
def main(cfg):
    launch.errors_to_the_log_file_only()
    signals.stop_at_once()  # each seed's sweep is kept when it ends: a stop loses only the seed under way
    try:
        existing_run(cfg.run)  # also where out= names the output folder
        schema.check_fields(EvaluateConfig, cfg)
        schema.refuse_run_file_name(cfg.name)
        if cfg.targets is not None and not (len(cfg.targets) and all(np.isfinite(cfg.targets))):
            raise ConfigError(f"targets={list(cfg.targets)}: give finite returns, e.g. targets=[1000,2000]")
        log.info("%s", threads.set_torch_threads(1))
        out_folder = HydraConfig.get().runtime.output_dir  # output_folder's, or out=<folder>
        (export_run if cfg.export else evaluate_run)(cfg, out_folder)
    except (ConfigError, DatasetError, RunError) as e:
        log.error("%s", e)
        raise SystemExit(f"error: {e}") from None
    except signals.Stopped as e:
        launch.fail(f"interrupted by {e}: each seed finished is kept; the same command again goes on from there",
                    code=128 + signal.Signals[str(e)].value)


if __name__ == "__main__":
    OmegaConf.register_new_resolver("existing_run", existing_run, use_cache=True, replace=True)  # hydra.run.dir
    sys.argv = [sys.argv[0], *output_option(sys.argv[1:])]
    launch.cli(main)
