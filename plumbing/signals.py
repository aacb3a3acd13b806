"""Ctrl-C, SIGTERM, SIGHUP and a Slurm job's notice: the training loop checkpoints, then stops
(stop_on_signals, stop_requested, Interrupted); evaluate.py stops where it is (stop_at_once, Stopped)."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal

# submitit (hydra/launcher=slurm) warns a job with SIGUSR2 signal_delay_s before Slurm's time limit (or a preemption
# where the cluster sends the job's signal); Slurm's own SIGTERM comes only seconds before its SIGKILL.
SLURM_NOTICE = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
STOP_SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, SLURM_NOTICE) if s is not None]
_signals = []  # the stop signals received, in order


def _note_signal(signum, frame):
    _signals.append(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """From now on the stop signals only set a flag that the training loop reads (in a submitit job: no requeue)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note_signal)


def pass_stops_to_children() -> None:
    """In a study's process: SIGINT, SIGTERM and SIGHUP pass on to the joblib launcher's workers, which checkpoint."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def pass_on(signum, frame):
        workers = [child for child in multiprocessing.active_children() if type(child).__name__ == "LokyProcess"]
        if workers:
            _note_signal(signum, frame)
        elif callable(before[signum]):
            before[signum](signum, frame)
        elif before[signum] == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(worker.pid, signum)
    for sig in before:
        signal.signal(sig, pass_on)


def stop_requested() -> str | None:
    """The name of the first signal that asked this process to stop (SIGINT, SIGTERM, SIGHUP, SIGUSR2), or None."""
    return _signals[0] if _signals else None


def interrupted_exit_code() -> int:
    """128 + the signal's number, as a shell reports a process a signal ended."""
    return 128 + signal.Signals[stop_requested()].value


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint of the current step: resume= continues it."""


class Stopped(Exception):
    """A stop signal (its name: str(e)) in a program that stops where it is (stop_at_once)."""


def stop_at_once() -> None:
    """From now on each stop signal raises Stopped where the program is (evaluate.py)."""
    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
