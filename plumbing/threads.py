"""How many torch threads a process uses, and how they wait: fast on an idle machine, no collapse on a busy one.

Imported first by the entry points (main.py, main_mp.py, evaluate.py, bench.py), before anything imports torch:
torch's OpenMP runtime (libgomp) reads its wait policy once, when it loads, so it must be in the environment by
then; seed processes (main_mp.py's, Hydra's launchers') inherit it. A thread that reaches a barrier first waits
for its siblings. If it spins long (libgomp's default: ~300 000 times, then sleep) and another process has taken
its sibling's core, it burns the core that sibling needs: 1348 ms a step instead of 88 ms with one thread
(issue 31). If it sleeps at once (OMP_WAIT_POLICY=PASSIVE), every one of a step's parallel regions pays a futex
wake-up: 1.36x slower on an idle machine. So: passive, after a short spin (SPIN_WHEN_IDLE) where the usable cores
are idle when the process starts, and passive at once where other processes keep them busy. The wait changes
speed only, never the numbers (docs/speed.md has both measurements). The thread count then follows the load
(Governor): a neighbour that takes a core costs the run a thread; core.thread_governor turns it on only where the
step is shown to give the same bits at each count (it would otherwise change the rounding).

OMP_WAIT_POLICY, GOMP_SPINCOUNT or OMP_NUM_THREADS in the environment, and train.threads, override the policy.
"""
import os
import sys
import time

SPIN_WHEN_IDLE = 1000  # GOMP_SPINCOUNT on an idle machine: short enough to cost little if others start later
BUSY_CORES = 0.5  # other processes' busy cores at start from which threads wait passively at once


def busy_ticks(cpus: set[int]) -> int:
    """The clock ticks the cores `cpus` have been busy since boot (/proc/stat)."""
    busy = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *ticks = line.split()
            if name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, ticks[:8])
                busy += user + nice + system + irq + softirq + steal
    return busy


def can_measure_load() -> bool:
    return os.path.exists("/proc/stat") and hasattr(os, "sched_getaffinity")


class OthersLoad:
    """The cores other processes kept busy since the last call: the usable cores' busy time less this process's."""

    def __init__(self):
        self.cpus = os.sched_getaffinity(0)
        self.last = self.read()

    def read(self) -> tuple[float, float, float]:
        """(now, the cores' busy seconds, this process's CPU seconds)."""
        own = os.times()
        return time.monotonic(), busy_ticks(self.cpus) / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def __call__(self) -> float:
        (then, busy_then, own_then), (now, busy, own) = self.last, self.read()
        self.last = (now, busy, own)
        return max(0.0, (busy - busy_then) - (own - own_then)) / max(now - then, 1e-9)


def others_busy_cores(seconds: float = 0.2) -> float | None:
    """The cores other processes keep busy, measured over `seconds` while this process sleeps, or None where
    /proc/stat is not there."""
    if not can_measure_load():
        return None
    others = OthersLoad()
    time.sleep(seconds)
    return others()


def choose_wait_policy() -> str:
    """Set OpenMP's wait in the environment, unless it is there already (the user's, or a parent process's), and
    say which and why."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        why = "from the environment"
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        busy = None if os.environ.get("OMP_NUM_THREADS") == "1" else others_busy_cores()
        why = "one thread" if busy is None else f"other processes kept {busy:.1f} cores busy at start"
        if busy is not None and busy < BUSY_CORES:
            os.environ["GOMP_SPINCOUNT"] = str(SPIN_WHEN_IDLE)
            why = "the usable cores were idle at start"
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    spins = os.environ.get("GOMP_SPINCOUNT") or ("0" if policy == "PASSIVE" else "300000")  # libgomp's defaults
    wait = "active (spin)" if policy == "ACTIVE" else "passive" if spins == "0" else f"spin {spins} times, then sleep"
    return f"{wait} ({why})"


WAITING = choose_wait_policy() if "torch" not in sys.modules else "as torch started (threads imported after it)"


def usable_cores() -> int:
    """The cores this process may run on (a Slurm job's allocation or a taskset, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_torch_threads(num_processes: int, threads: int | None = None) -> str:
    """Set torch's threads: OMP_NUM_THREADS if set, else `threads` (train.threads) if given, else the usable
    cores shared between `num_processes` processes. Returns the one line that says how many and why."""
    import torch
    if os.environ.get("OMP_NUM_THREADS"):  # torch itself started with that many threads
        why = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    elif threads:
        torch.set_num_threads(threads)
        why = f"train.threads={threads}"
    else:
        torch.set_num_threads(max(1, usable_cores() // num_processes))
        why = f"{usable_cores()} usable cores shared by {num_processes} process{'es' * (num_processes > 1)}"
    count = torch.get_num_threads()
    return f"{count} torch thread{'s' * (count > 1)} ({why}); OpenMP threads wait {WAITING}"


class Governor:
    """Torch threads that follow the load: every `every` seconds, as many as the usable cores other processes leave
    free (at least one, at most `most`). A neighbour that takes a core then costs this run a thread, not a collapse
    (docs/speed.md). Only for a step whose numbers do not depend on the thread count (core.thread_governor checks)."""

    def __init__(self, most: int, every: float = 2.0, others_busy=None):
        self.most, self.every = most, every
        self.others_busy = others_busy or OthersLoad()  # () -> cores busy with other processes since the last call
        self.next_check = time.monotonic() + every

    def __call__(self) -> None:
        """Between two steps: the thread count for the load now, when a check is due."""
        import torch
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.every
        free = usable_cores() - self.others_busy()
        torch.set_num_threads(min(self.most, max(1, round(free))))
