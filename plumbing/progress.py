"""A seed's progress: main.py's tqdm bar (on a terminal) and main_mp.py's one line over its seeds."""
import contextlib
import logging
import shutil
import sys
import time
from dataclasses import dataclass
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
    ends: float | None  # the time.time() it should end at (SeedRecord.ends); None before this attempt's first step

    def text(self) -> str:
        """'step 4200/20000, loss 0.0123, score 45.1', as far as they are known."""
        return ", ".join([f"step {self.step}/{self.steps}", *([] if self.loss is None else [f"loss {self.loss:.4f}"]),
                          *([] if self.score is None else [f"score {self.score:.1f}"])])


def eta(ends: float | None) -> str:
    """The time left until `ends` (a time.time()): '1:02:03', '02:03', or '?' when unknown."""
    return "?" if ends is None else tqdm.format_interval(max(0.0, ends - time.time()))


def after_ctrl_c() -> None:
    """On a terminal, back to the start of the line: what is printed after a Ctrl-C covers the echoed '^C'."""
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            stream.write("\r")
            stream.flush()


class Bar:
    """main.py's bar of a seed on a terminal, its ETA from this attempt's mean step rate; elsewhere nothing."""

    def __init__(self):
        self.bar: tqdm | None = None
        self.above = contextlib.ExitStack()  # on a terminal, while open: the console's log lines above the bar

    def __call__(self, p: SeedProgress) -> None:
        if self.bar is None:
            width = shutil.get_terminal_size().columns - 3  # room after it for the '^C' a terminal echoes on Ctrl-C
            self.bar = tqdm(total=p.steps, initial=p.step, desc=f"seed {p.seed}", mininterval=2, smoothing=0,
                            ncols=width, disable=None)  # disable=None: not on a terminal
            if not self.bar.disable:
                self.above.enter_context(logging_redirect_tqdm())
        known = {"loss": p.loss, "score": p.score}
        self.bar.set_postfix({name: value for name, value in known.items() if value is not None}, refresh=False)
        self.bar.update(p.step - self.bar.n)

    def close(self) -> None:
        """The bar stays on the screen with its last state; what follows starts on a line of its own."""
        if self.bar is not None:
            self.bar.close()
        self.above.close()


@dataclass
class Sender:
    """A main_mp.py seed's end of its pipe to SeedsLine: its progress, then why it stopped (stopped, one line)."""
    connection: Connection

    def __call__(self, message: SeedProgress | str) -> None:
        self.connection.send(message)

    stopped = __call__

    def close(self) -> None:
        """The pipe stays open for `stopped` (an error in the final evaluation)."""


class SeedsLine:
    """main_mp.py's progress: what the seeds send (a stopped seed's cause: causes), logged after any periodic eval
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
                state = "ended" if seed in ended else "starting" if p is None else f"ETA {eta(p.ends)}"
                seeds.append(f"seed {seed}: " + (f"{p.text()}, " if p else "") + state)
            ends = [p.ends if p else None for seed, p in self.latest.items() if seed not in ended]
            log.info("%s", " | ".join([*seeds, f"run ETA {eta(None if None in ends else max(ends, default=0))}"]))
            self.printed = time.time()
