"""A seed's progress and ETA (this attempt's seconds per step so far, evals included, times the steps left): main.py's
bar (on a terminal; else a log line every 30 s) and main_mp.py's one line over its seeds."""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedProgress:
    """A seed's progress at one moment (plumbing/record.py SeedRecord.report)."""

    seed: int
    step: int
    steps: int
    loss: float | None  # the last logged loss
    score: float | None  # the last periodic eval's normalized score
    evals: int  # periodic evals so far
    step_seconds: float | None  # this attempt's seconds per step; None before its first step
    at: float  # time.time() of the measure

    def left_now(self) -> float | None:
        """Seconds until the seed's end, counted down to now."""
        if self.step_seconds is None:
            return None
        return max(0.0, (self.steps - self.step) * self.step_seconds - (time.time() - self.at))

    def text(self) -> str:
        """'step 4200/20000, loss 0.0123, score 45.1', as far as they are known."""
        return ", ".join([f"step {self.step}/{self.steps}", *([] if self.loss is None else [f"loss {self.loss:.4f}"]),
                          *([] if self.score is None else [f"score {self.score:.1f}"])])


@dataclass
class Clock:
    """A seed's clock in this attempt (a resumed seed measures again): its seconds and its pace."""

    first_step: int = 0  # the step this attempt started after
    started: float = field(default_factory=lambda: time.time())

    def seconds(self) -> float:
        return time.time() - self.started

    def step_seconds(self, step: int) -> float | None:
        """Seconds per step trained in this attempt; None before its first."""
        return self.seconds() / (step - self.first_step) if step > self.first_step else None


def duration(seconds: float | None) -> str:
    """'1:02:03', '02:03', or '?' when unknown."""
    return "?" if seconds is None else tqdm.format_interval(seconds)


def after_ctrl_c() -> None:
    """On a terminal, back to the start of the line: what is printed after a Ctrl-C covers the echoed '^C'."""
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            stream.write("\r")
            stream.flush()


class Bar:
    """main.py's bar of a seed and the run's ETA (on a terminal; elsewhere a log line every `every` seconds)."""

    def __init__(self, later_seeds: int = 0, every: float = 30):
        self.later_seeds, self.every, self.printed = later_seeds, every, 0.0
        self.bar: tqdm | None = None
        self.above = contextlib.ExitStack()  # on a terminal, while open: the console's log lines above the bar

    def __call__(self, progress: SeedProgress) -> None:
        run_left = progress.left_now()
        if run_left is not None:
            run_left += self.later_seeds * progress.steps * progress.step_seconds
        if self.bar is None:
            width = shutil.get_terminal_size().columns - 3  # room after it for the '^C' a terminal echoes on Ctrl-C
            self.bar = tqdm(total=progress.steps, initial=progress.step, desc=f"seed {progress.seed}", mininterval=2,
                            ncols=width, disable=None, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/"
                                                                 "{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")
            if not self.bar.disable:  # a terminal
                self.above.enter_context(logging_redirect_tqdm())
        if self.bar.disable:
            if time.time() - self.printed >= self.every and progress.step_seconds is not None:
                log.info("seed %d: %s, run ETA %s", progress.seed, progress.text(), duration(run_left))
                self.printed = time.time()
            return
        self.bar.set_postfix_str(", ".join([*progress.text().split(", ")[1:], f"run ETA {duration(run_left)}"]),
                                 refresh=False)
        self.bar.update(progress.step - self.bar.n)

    def close(self) -> None:
        """The bar stays on the screen with its last state; what follows starts on a line of its own."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.above.close()


class Sender:
    """A main_mp.py seed process's reporter: its progress and why it stopped go through its pipe to SeedsLine."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def __call__(self, message: SeedProgress | str) -> None:
        self.connection.send(message)

    stopped = __call__  # why the seed stopped, in one line (its error, or what to change): its last message

    def close(self) -> None:
        """The pipe stays open for the seed's cause (an error in the final evaluation), and closes with it."""


class SeedsLine:
    """main_mp.py's progress: what the seeds send (a stopped seed's cause: causes), logged after each periodic eval
    and every `every` seconds: seed 0: step 4200/20000, loss 0.0123, score 45.1, ETA 12:03 | ... | run ETA 14:10"""

    def __init__(self, seeds: list[int], context: BaseContext, every: float = 30):
        pipes = {seed: context.Pipe(duplex=False) for seed in seeds}  # (receiver, sender) each
        self.receivers = {seed: receiver for seed, (receiver, _) in pipes.items()}
        self.senders = {seed: Sender(sender) for seed, (_, sender) in pipes.items()}
        self.latest: dict[int, SeedProgress | None] = dict.fromkeys(seeds)
        self.causes: dict[int, str] = {}
        self.every, self.printed = every, time.time()

    def started(self) -> None:
        """The seeds' processes hold their senders now: this process's copies close (a seed's end reads as EOF)."""
        for sender in self.senders.values():
            sender.connection.close()

    def update(self, ended: set[int]) -> None:
        """Read what the seeds sent (ended: the seeds whose process has ended); log the line when due."""
        evaluated = False
        for seed, receiver in list(self.receivers.items()):
            try:
                while receiver.poll():
                    message = receiver.recv()
                    if isinstance(message, str):  # Sender.stopped
                        self.causes[seed] = message
                    else:
                        evaluated |= message.evals > (self.latest[seed].evals if self.latest[seed] else 0)
                        self.latest[seed] = message
            except (EOFError, OSError):  # the seed's process has ended and everything it sent is read
                del self.receivers[seed]
        if evaluated or time.time() - self.printed >= self.every:
            seeds = []
            for seed, p in self.latest.items():
                state = "ended" if seed in ended else "starting" if p is None else f"ETA {duration(p.left_now())}"
                seeds.append(f"seed {seed}: " + (f"{p.text()}, " if p else "") + state)
            left = [p.left_now() if p else None for seed, p in self.latest.items() if seed not in ended]
            run_left = None if None in left else max(left, default=0.0)
            log.info("%s", " | ".join([*seeds, f"run ETA {duration(run_left)}"]))
            self.printed = time.time()
