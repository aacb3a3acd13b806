"""Train the Decision Transformer on each configured seed, one after another.

    python main.py                                   # hopper-medium, seeds 0 1 2
    python main.py env=walker2d buffer.dataset=medium-replay
    python main.py resume=runs/<date>/<time>         # continue an interrupted run
"""
from plumbing import threads  # noqa: I001  first, before torch loads: it sets OpenMP's wait policy (threads.py says why)

import logging
import traceback

import hydra

import core
from plumbing import errors, launch, progress, signals
from plumbing.launch import FATAL, fail, shown
from plumbing.record import NonFiniteLossError
from plumbing.signals import Interrupted
from utils import WriteError

log = logging.getLogger(__name__)


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
@launch.job
def main(cfg):
    cfg, run = launch.start(cfg)
    log.info("%s", threads.set_torch_threads(1, cfg.train.threads))
    resume = f"python main.py resume={shown(run.dir)}"
    crashed, diverged = [], []
    with launch.stop_on_write_errors(run, resume):
        for seed in cfg.seeds:
            try:
                core.train(cfg, seed, run, progress.Bar())
            except FATAL as e:
                fail(f"error: {e}")
            except Interrupted as e:
                progress.after_ctrl_c()
                run.summarize(cfg)
                fail(f"interrupted: {e}. Resume with: {resume}", code=signals.interrupted_exit_code())
            except NonFiniteLossError as e:  # a NaN or inf loss or score: a resume would reach it again
                log.error("%s", e)
                diverged.append((seed, str(e)))
            except WriteError:  # a full disk or a read-only folder: the next seeds' writes would fail too
                raise
            except Exception as e:  # a crashed seed keeps the others' results
                log.error("seed %d failed:\n%s", seed, traceback.format_exc())
                if errors.advice(e):  # every seed, and every resume, would fail the same way
                    fail(f"error: seed {seed}: {errors.advice(e)}")
                crashed.append(seed)
        run.summarize(cfg)
    if diverged:
        fail(f"seeds {[seed for seed, _ in diverged]} stopped: {diverged[0][1]}"
             + (f"; seeds {crashed} crashed" if crashed else ""))
    if crashed:
        fail(f"seeds {crashed} failed; see {shown(run.dir / 'main.log')}. Resume with: {resume}")


if __name__ == "__main__":
    launch.setup()
    launch.cli(main)
