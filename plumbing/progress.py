"""Feedback on long work: a seed's progress as it trains, the ETA of the whole run, and how the entry points show it
(main.py: a bar per seed; main_mp.py: one line over its seeds, printed by the parent process).

The ETA (estimate) comes from what the seed measured in this attempt (a resumed seed measures again):
    training     steps left x seconds per training step, of the recent steps (Pace; the evals' time left out)
    evals        periodic evals left x the last one's seconds
    final eval   the last periodic eval's seconds x eval.final_episodes / eval.episodes (linear in the episodes,
                 though a pass runs its envs in lockstep: it errs long)
    video        with eval.video, one more periodic eval's seconds (one episode, filmed)
Before a seed's first periodic eval nothing is known of the evals' cost: its ETA is shown as '?'. The run's ETA:
main.py trains its seeds one after another, so it adds the later unfinished seeds, each as long as the current
seed from step 0 (seed_seconds); main_mp.py trains them at once: the slowest seed's.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Protocol, TextIO

from omegaconf import DictConfig
from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedProgress:
    """A seed's progress at one moment, as its record measured it (core.SeedRecord.report)."""

    seed: int
    step: int
    steps: int
    loss: float | None  # the last logged loss
    score: float | None  # the last periodic eval's normalized score
    evals: int  # periodic evals so far
    seconds_left: float | None  # until the seed's end (estimate); None before it can be estimated
    seed_seconds: float | None  # a whole seed from step 0 (estimate): what each later seed of main.py takes
    at: float  # time.time() of the measure

    def left_now(self) -> float | None:
        """seconds_left, counted down to now."""
        return None if self.seconds_left is None else max(0.0, self.seconds_left - (time.time() - self.at))

    def measures(self) -> list[str]:
        """['loss 0.0123', 'score 45.1'], as far as they are known."""
        return [*([] if self.loss is None else [f"loss {self.loss:.4f}"]),
                *([] if self.score is None else [f"score {self.score:.1f}"])]

    def text(self) -> str:
        """'step 4200/20000, loss 0.0123, score 45.1'."""
        return ", ".join([f"step {self.step}/{self.steps}", *self.measures()])


@dataclass
class Pace:
    """A seed's clock in this attempt (a resumed seed measures again): its seconds, and the pace of its recent
    training steps and its last periodic eval, which its ETA is estimated from.

    The step pace is that of the last `window` estimates, not of the whole attempt: a pause (a process stopped with
    Ctrl-Z or SIGSTOP) or a neighbour that came or went stops counting once the window has passed it.
    """

    first_step: int = 0  # the step this attempt started after
    started: float = field(default_factory=time.time)
    eval_seconds: float = 0.0  # the periodic evals'
    last_eval_seconds: float | None = None  # the last periodic eval's
    window: int = 20  # estimates whose pace counts (main.py's defaults: 2 000 steps)
    marks: deque[tuple[float, int, float]] = field(init=False)  # (time, step, eval_seconds) at recent estimates

    def __post_init__(self) -> None:
        self.marks = deque([(self.started, self.first_step, 0.0)], maxlen=self.window + 1)

    def seconds(self) -> float:
        return time.time() - self.started

    @contextmanager
    def timing_eval(self) -> Iterator[None]:
        """Around a periodic eval: its seconds."""
        started = time.time()
        yield
        self.last_eval_seconds = time.time() - started
        self.eval_seconds += self.last_eval_seconds

    def estimate(self, cfg: DictConfig, step: int) -> tuple[float | None, float | None]:
        """estimate() at `step` from the recent steps' seconds; (None, None) before a step and an eval."""
        if step > self.marks[-1][1]:
            self.marks.append((time.time(), step, self.eval_seconds))
        (then, then_step, then_evals), (now, _, evals) = self.marks[0], self.marks[-1]
        if step == then_step or self.last_eval_seconds is None:
            return None, None
        step_seconds = (now - then - (evals - then_evals)) / (step - then_step)
        return estimate(cfg, step, step_seconds, self.last_eval_seconds)


def estimate(cfg: DictConfig, step: int, step_seconds: float, eval_seconds: float) -> tuple[float, float]:
    """(seconds left after `step`, seconds of a whole seed) from the seconds of one training step and of one periodic
    eval; the module's docstring says how."""
    steps, every = cfg.train.steps, cfg.train.eval_every
    evals = steps // every + (steps % every != 0)  # at each multiple of eval_every, and at the last step
    evals_done = evals if step >= steps else step // every
    end = eval_seconds * (cfg.eval.final_episodes / cfg.eval.episodes + cfg.eval.video)  # final eval and video
    left = (steps - step) * step_seconds + (evals - evals_done) * eval_seconds + end
    return left, steps * step_seconds + evals * eval_seconds + end


def after_ctrl_c() -> None:
    """On a terminal, back to the start of the line: a message printed after a Ctrl-C covers the '^C' that the
    terminal echoed at the start of a line (below a log line) instead of following it."""
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            stream.write("\r")
            stream.flush()


def duration(seconds: float | None) -> str:
    """'1:02:03', '02:03', or '?' when unknown."""
    return "?" if seconds is None else tqdm.format_interval(seconds)


class Reporter(Protocol):
    """Where a seed's record sends its progress: called at each log interval and eval, closed at the seed's end."""

    def __call__(self, progress: SeedProgress) -> None: ...

    def close(self) -> None: ...


class Bar:
    """main.py's progress of a seed: a bar of its steps (on a terminal only) with its loss, last score and the run's
    ETA (this seed's and `later_seeds` more after it); log lines are printed above the bar, not into it."""

    def __init__(self, later_seeds: int = 0):
        self.later_seeds = later_seeds
        self.bar: tqdm | None = None
        self.consoles: list[tuple[logging.StreamHandler, TextIO]] = []  # (handler, its own stream) while open

    def __call__(self, progress: SeedProgress) -> None:
        if self.bar is None:
            self.open(progress)
        self.bar.set_postfix_str(self.postfix(progress), refresh=False)
        self.bar.update(progress.step - self.bar.n)

    def run_left(self, progress: SeedProgress) -> float | None:
        """Seconds until the run's end: this seed's, then the later seeds' one after another."""
        if progress.seconds_left is None:
            return None
        return progress.left_now() + self.later_seeds * progress.seed_seconds

    def postfix(self, progress: SeedProgress) -> str:
        """'loss 0.0123, score 45.1, run ETA 1:02:03'."""
        return ", ".join([*progress.measures(), f"run ETA {duration(self.run_left(progress))}"])

    def open(self, progress: SeedProgress) -> None:
        width = shutil.get_terminal_size().columns - 3  # room after it for the '^C' a terminal echoes on Ctrl-C
        self.bar = tqdm(total=progress.steps, initial=progress.step, desc=f"seed {progress.seed}", mininterval=2,
                        ncols=width, disable=None, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                             "[{elapsed}, {rate_fmt}{postfix}]")
        if self.bar.disable:  # not a terminal
            return
        for handler in logging.getLogger().handlers:  # the console's (Hydra's), not the log file's
            if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
                self.consoles.append((handler, handler.setStream(AboveTheBar(handler.stream))))

    def close(self) -> None:
        """The bar stays on the screen with its last state; what follows starts on a line of its own."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        for handler, stream in self.consoles:
            handler.setStream(stream)
        self.consoles = []


class AboveTheBar:
    """A console stream whose lines tqdm prints above its bars (tqdm.write)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()


@dataclass(frozen=True)
class Stopped:
    """A main_mp.py seed process's last message: why it stopped, in one line (its error, or what to change)."""

    cause: str


class Sender:
    """A main_mp.py seed process's reporter: each progress, and why the seed stopped (stopped), goes to the parent's
    SeedsLine through the seed's one pipe (which needs no disk); nothing to the terminal."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def __call__(self, progress: SeedProgress) -> None:
        self.connection.send(progress)

    def stopped(self, cause: str) -> None:
        self.connection.send(Stopped(cause))

    def close(self) -> None:
        """The seed's progress ends; the pipe stays open for its cause (an error in the final evaluation), and closes
        with the process."""


class SeedsLine:
    """main_mp.py's progress: what the seeds' processes send (Sender), logged as one line over the seeds after each
    periodic eval and at least every `every` seconds: per seed its step, loss, last score and ETA; the run's ETA.
    A seed that stopped on an error sent its one-line cause last (causes).

        seed 0: step 4200/20000, loss 0.0123, score 45.1, ETA 12:03 | seed 1: ... | run ETA 14:10
    """

    def __init__(self, seeds: list[int], context: BaseContext, every: float = 30):
        pipes = {seed: context.Pipe(duplex=False) for seed in seeds}  # (receiver, sender) each
        self.receivers = {seed: receiver for seed, (receiver, _) in pipes.items()}
        self.senders = {seed: Sender(sender) for seed, (_, sender) in pipes.items()}
        self.latest: dict[int, SeedProgress | None] = dict.fromkeys(seeds)
        self.causes: dict[int, str] = {}  # why a seed stopped, as it sent it (Stopped)
        self.ended: set[int] = set()
        self.every, self.printed = every, time.time()

    def started(self) -> None:
        """The seeds' processes hold their senders now: this process's copies close (a seed's end reads as EOF)."""
        for sender in self.senders.values():
            sender.connection.close()

    def update(self, ended: set[int]) -> None:
        """Read what the seeds sent; log the line after a new periodic eval or when `every` seconds have passed.
        ended: the seeds whose process has ended."""
        evaluated = False
        for seed, receiver in list(self.receivers.items()):
            try:
                while receiver.poll():
                    message = receiver.recv()
                    if isinstance(message, Stopped):
                        self.causes[seed] = message.cause
                        continue
                    evaluated |= message.evals > (self.latest[seed].evals if self.latest[seed] else 0)
                    self.latest[seed] = message
            except (EOFError, OSError):  # the seed's process has ended and everything it sent is read
                del self.receivers[seed]
        self.ended = ended
        if evaluated or time.time() - self.printed >= self.every:
            log.info("%s", self.line())
            self.printed = time.time()

    def line(self) -> str:
        seeds = [self.seed_text(seed, progress) for seed, progress in self.latest.items()]
        return " | ".join([*seeds, f"run ETA {duration(self.run_left())}"])

    def seed_text(self, seed: int, progress: SeedProgress | None) -> str:
        if progress is None:
            return f"seed {seed}: " + ("ended" if seed in self.ended else "starting")
        return f"seed {seed}: {progress.text()}, " + ("ended" if seed in self.ended else
                                                      f"ETA {duration(progress.left_now())}")

    def run_left(self) -> float | None:
        """Seconds until the slowest seed's end; None while a running seed has no estimate yet."""
        left = [p.left_now() if p else None for seed, p in self.latest.items() if seed not in self.ended]
        return None if None in left else max(left, default=0.0)
