"""Ctrl-C, SIGTERM, SIGHUP and a scheduler's preemption notice: the training loop checkpoints, then stops
(stop_on_signals, stop_requested, Interrupted); evaluate.py stops where it is (stop_at_once, Stopped)."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal

log = logging.getLogger(__name__)
# submitit (Hydra's submitit launchers) warns a job with SIGUSR2 before Slurm stops it (its time limit, or a
# preemption where the cluster sends the job's signal); Slurm's own notice is SIGTERM, which submitit ignores.
PREEMPTION_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
STOP_SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, PREEMPTION_SIGNAL) if s is not None]
_signals = []  # the stop signals received, in order
_requeue = None  # submitit's handler of the preemption signal: it resubmits the job (which then resumes)


def _note_signal(signum, frame):
    _signals.append(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """From now on the stop signals only set a flag that the training loop reads."""
    global _requeue
    previous = signal.getsignal(PREEMPTION_SIGNAL) if PREEMPTION_SIGNAL else None
    if callable(previous) and previous is not _note_signal:  # a submitit job: requeue once the checkpoint is written
        _requeue = previous
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


def requeue_if_preempted() -> None:
    """In a submitit job preempted, after the checkpoint: submitit requeues it into its folder, which it resumes."""
    if _requeue is not None and PREEMPTION_SIGNAL.name in _signals:
        log.warning("preempted: submitit requeues this job, which resumes from its checkpoint")
        _requeue(PREEMPTION_SIGNAL.value, None)


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
