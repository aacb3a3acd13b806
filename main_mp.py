"""Train the Decision Transformer's seeds in parallel processes, one per seed.

    python main_mp.py env=walker2d buffer.dataset=medium
"""
import logging
import multiprocessing as mp
import traceback
from pathlib import Path

import hydra
from omegaconf import OmegaConf

import core
import utils
from buffer import DatasetError
from main import prepare, summarize

log = logging.getLogger(__name__)


def train_seed(cfg_dict, seed, run_dir, num_processes):
    """Body of one seed's process: its own log file; its error written to seed<seed>/error.txt."""
    seed_dir = Path(run_dir) / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    (seed_dir / "error.txt").unlink(missing_ok=True)  # from an earlier, resumed attempt
    logging.basicConfig(filename=seed_dir / "train.log", level=logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    utils.set_torch_threads(num_processes)
    try:
        core.train(OmegaConf.create(cfg_dict), seed, run_dir)
    except BaseException:
        utils.atomic_write_bytes(seed_dir / "error.txt", traceback.format_exc().encode())
        raise


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg):
    try:
        cfg, run_dir = prepare(cfg)
    except (core.ConfigError, DatasetError) as e:
        raise SystemExit(f"error: {e}")
    ctx = mp.get_context("spawn")
    cfg_dict = OmegaConf.to_container(cfg)
    procs = {seed: ctx.Process(target=train_seed, args=(cfg_dict, seed, run_dir, len(cfg.seeds)), name=f"seed{seed}")
             for seed in cfg.seeds}
    for p in procs.values():
        p.start()
    for p in procs.values():
        p.join()
    failed = {seed: p.exitcode for seed, p in procs.items() if p.exitcode != 0}
    for seed, code in failed.items():
        error = Path(run_dir) / f"seed{seed}" / "error.txt"
        reason = error.read_text().strip().splitlines()[-1] if error.exists() else f"killed (exit code {code})"
        log.error("seed %d failed: %s", seed, reason)
    summarize(cfg, run_dir)
    if failed:
        raise SystemExit(f"seeds {sorted(failed)} failed; the figure and summary.json hold the others. "
                         f"Resume with: python main_mp.py resume={run_dir}")


if __name__ == "__main__":
    main()
