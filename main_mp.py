"""Train the Decision Transformer's seeds in parallel processes, one per seed.

    python main_mp.py env=walker2d buffer.dataset=medium
    python main_mp.py resume=runs/<date>/<time>      # continue an interrupted run
"""
from plumbing import threads  # noqa: I001  first, before torch loads: it sets OpenMP's wait policy (threads.py says why)

import logging
import multiprocessing as mp
import os
import signal
import sys

import hydra
from omegaconf import OmegaConf

import core
import utils
from plumbing import errors, folder_lock, launch, progress, signals
from plumbing.launch import FATAL, fail, shown
from plumbing.record import NonFiniteLossError
from plumbing.runfolder import Run
from plumbing.signals import Interrupted

log = logging.getLogger(__name__)
# How a seed's process ends (its exit code), besides 0 (finished) and 128 + signal (interrupted, checkpointed):
CRASHED, STOPPED = 1, 2  # crashed: resume= retries it; stopped on a config, data or NaN error: resume would not help


def train_seed(cfg_dict, seed, run_dir, num_processes, show):
    """Body of one seed's process: its own log file (seed<N>/train.log, with a crash's traceback); its progress, and
    why it stopped in one line, sent to the parent (show: a progress.Sender, a pipe's end); the exit code says how."""
    folder_lock.die_with_parent(mp.parent_process().pid)  # no orphan goes on writing after a kill -9 of main_mp.py
    run = Run(run_dir)
    logging.basicConfig(filename=run.seed(seed).log_path(), level=logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    launch.errors_to_the_log_file_only()
    signals.stop_on_signals()
    log.info("seed %d: %s", seed, threads.set_torch_threads(num_processes, cfg_dict["train"]["threads"]))
    try:
        core.train(OmegaConf.create(cfg_dict), seed, run, show)
    except Interrupted as e:
        log.warning("%s", e)
        sys.exit(signals.interrupted_exit_code())
    except (*FATAL, NonFiniteLossError) as e:
        show.stopped(str(e))
        sys.exit(STOPPED)
    except BaseException as e:
        log.exception("seed %d failed", seed)
        told = errors.advice(e)  # a failure every resume would meet again: what to change instead
        show.stopped(told or f"{type(e).__name__}: {e}")
        sys.exit(STOPPED if told else CRASHED)


def wait(procs, line):
    """Join the seeds' processes, logging their progress line (a progress.SeedsLine); a SIGINT or SIGTERM to this
    process is passed on to them (they checkpoint)."""
    passed_on = False
    while any(p.is_alive() for p in procs.values()):
        line.update({seed for seed, p in procs.items() if not p.is_alive()})
        if signals.stop_requested() and not passed_on:
            progress.after_ctrl_c()
            log.warning("%s: each seed writes a checkpoint of its current step, then stops", signals.stop_requested())
            for p in procs.values():
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            passed_on = True
        for p in procs.values():
            p.join(timeout=0.2)
    line.update(set(procs))  # what the seeds sent last: their final state after their last eval


def reason(run: Run, seed: int, code: int, cause: str | None) -> str:
    """One line on how a seed's process ended (cause: the line it sent, if any), and where its checkpoint stands."""
    if code in (CRASHED, STOPPED) and cause:
        return cause
    step = run.seed(seed).checkpoint_step()
    saved = f"its checkpoint is at step {step}" if step else "no checkpoint yet (a resumed run starts it at step 0)"
    if code > 128:
        return f"interrupted by {signal.Signals(code - 128).name}, {saved}"
    if code < 0 and signals.stop_requested():  # stopped before its own signal handler was set
        return f"stopped by {signal.Signals(-code).name}; {saved}"
    return f"killed (exit code {code}); {saved}"


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
@launch.job
def main(cfg):
    cfg, run = launch.start(cfg)
    ctx = mp.get_context("spawn")
    cfg_dict = OmegaConf.to_container(cfg)
    line = progress.SeedsLine(list(cfg.seeds), ctx)
    procs = {seed: ctx.Process(target=train_seed, name=f"seed{seed}", args=(
                 {**cfg_dict, "device": utils.seed_device(cfg.device, i)}, seed, str(run.dir), len(cfg.seeds),
                 line.senders[seed]))
             for i, seed in enumerate(cfg.seeds)}  # the seeds take the visible GPUs in turn
    for p in procs.values():
        p.start()
    line.started()
    wait(procs, line)
    ended = {seed: p.exitcode for seed, p in procs.items() if p.exitcode != 0}
    told = {seed: reason(run, seed, code, line.causes.get(seed)) for seed, code in ended.items()}
    for seed, code in ended.items():
        stopped_by_user = code > 128 or code < 0 and signals.stop_requested()
        log.log(logging.WARNING if stopped_by_user else logging.ERROR, "seed %d: %s", seed, told[seed])
    command = f"python main_mp.py resume={shown(run.dir)}"
    with launch.stop_on_write_errors(run, command):
        run.summarize(cfg)
    resume = f"Resume with: {command}"
    if ended and (signals.stop_requested() or any(code > 128 for code in ended.values())):
        fail(f"interrupted: seeds {sorted(ended)} stopped with a checkpoint. {resume}",
             code=signals.interrupted_exit_code() if signals.stop_requested() else 128 + signal.SIGTERM)
    stopped = sorted(seed for seed, code in ended.items() if code == STOPPED)
    crashed = sorted(seed for seed, code in ended.items() if code != STOPPED)
    if stopped:
        fail(f"seeds {stopped} stopped: {told[stopped[0]]}" + (f"; seeds {crashed} failed" if crashed else ""))
    if crashed:
        fail(f"seeds {crashed} failed ({told[crashed[0]]}); the figure and summary.json hold the others. {resume}")


if __name__ == "__main__":
    launch.setup()
    launch.cli(main)
