"""Ctrl-C, SIGTERM (also Slurm's notice before its time limit: sbatch --signal=TERM@<seconds>) and SIGHUP: training
checkpoints, then stops (stop_on_signals, stop_requested, Interrupted); evaluate.py stops at once (stop_at_once)."""
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_signals = []  # the stop signals received, in order


def stop_on_signals() -> None:
    """From now on the stop signals only set a flag that the training loop reads."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: _signals.append(signal.Signals(signum).name))


def stop_requested() -> str | None:
    """The name of the first signal that asked this process to stop (SIGINT, SIGTERM, SIGHUP), or None."""
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
