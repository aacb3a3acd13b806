"""Train the Decision Transformer on each configured seed, one after another.

    python main.py                                   # hopper-medium, seeds 0 1 2
    python main.py env=walker2d buffer.dataset=medium-replay
    python main.py resume=runs/<date>/<time>         # continue an interrupted run
"""
import json
import logging
import os
import traceback
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

import core
import utils
from buffer import DatasetError

log = logging.getLogger(__name__)


def is_run(folder):
    return bool(folder) and (Path(to_absolute_path(folder)) / "config.yaml").exists()


# hydra.run.dir: a resumed run's own folder; a resume= path that holds no run is not created (prepare's error
# goes to a fresh folder's main.log, like any other config error)
OmegaConf.register_new_resolver("run_dir", lambda resume, fresh: resume if is_run(resume) else fresh, replace=True)


def prepare(cfg):
    """The run's config (a resumed run's own, else this one), checked and saved; and the run folder.

    The run folder is Hydra's output folder runs/<date>/<time>; a resumed run writes into its own folder
    and keeps its config (keys the project gained since take their defaults), except that seeds given on
    the command line are added (`resume=<run> seeds=[0,1,2]` adds seeds 1 and 2 to a seed-0 run).
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.resume:
        run_dir = Path(to_absolute_path(cfg.resume))
        if not is_run(cfg.resume):
            raise core.ConfigError(f"resume={cfg.resume}: no config.yaml there; give a folder under runs/")
        overrides = [o.lstrip("+") for o in HydraConfig.get().overrides.task]
        ignored = [o for o in overrides if not o.startswith(("resume=", "seeds="))]
        if ignored:
            log.warning("resume: the run keeps its own config; ignoring %s", " ".join(ignored))
        saved = OmegaConf.load(run_dir / "config.yaml")
        if any(o.startswith("seeds=") for o in overrides):
            saved.seeds = sorted(set(saved.seeds) | set(cfg.seeds))
        defaults = OmegaConf.to_container(cfg)
        del defaults["env"]  # today's default env is not the run's: its env block stays as it was
        cfg = OmegaConf.merge(defaults, saved)
    OmegaConf.resolve(cfg)
    if cfg.buffer.path:
        cfg.buffer.path = to_absolute_path(cfg.buffer.path)
    if "D4RL_DATASET_DIR" in os.environ:  # relative to where the user started, not the run folder
        os.environ["D4RL_DATASET_DIR"] = to_absolute_path(os.environ["D4RL_DATASET_DIR"])
    core.check_config(cfg)
    if not cfg.buffer.file:  # one download before the seeds start; the run records the file it read
        cfg.buffer.file = str(Path(core.locate_dataset(cfg)).resolve())
    utils.atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
    return cfg, run_dir


def summarize(cfg, run_dir):
    """Gather the seeds' final.json into summary.json and the figure; return the summary."""
    finals = [json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("seed*/final.json"))]
    scores = [f["score_mean"] for f in finals]
    summary = {"env": cfg.env.name, "dataset": cfg.buffer.path or cfg.buffer.dataset,
               "seeds": [f["seed"] for f in finals],
               "missing_seeds": sorted(set(cfg.seeds) - {f["seed"] for f in finals}),
               "score_mean": float(np.mean(scores)) if scores else None,
               "score_std": float(np.std(scores)) if len(scores) > 1 else None,  # no spread over one seed
               "per_seed": finals}
    utils.atomic_write_bytes(Path(run_dir) / "summary.json", json.dumps(summary, indent=2).encode())
    core.plot_run(cfg, run_dir)
    if scores:
        spread = "" if summary["score_std"] is None else f" +- {summary['score_std']:.1f}"
        log.info("%s-%s: normalized score %.1f%s over seeds %s (final evals of %d episodes)", summary["env"],
                 summary["dataset"], summary["score_mean"], spread, summary["seeds"], cfg.eval.final_episodes)
    return summary


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg):
    try:
        cfg, run_dir = prepare(cfg)
        utils.set_torch_threads(num_processes=1)
        failed = []
        for seed in cfg.seeds:
            try:
                core.train(cfg, seed, run_dir)
            except (core.ConfigError, DatasetError):
                raise  # the same for every seed: stop now
            except Exception:  # a crashed seed keeps the others' results
                log.error("seed %d failed:\n%s", seed, traceback.format_exc())
                failed.append(seed)
        summarize(cfg, run_dir)
    except (core.ConfigError, DatasetError) as e:
        raise SystemExit(f"error: {e}")
    if failed:
        raise SystemExit(f"seeds {failed} failed; see {run_dir / 'main.log'}. Resume with resume={run_dir}")


if __name__ == "__main__":
    main()
