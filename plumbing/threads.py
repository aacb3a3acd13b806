"""How torch's OpenMP threads wait (set before torch loads: entry points import this first), and how many.
A long spin at a barrier burns the core a sibling needs on a busy machine (a step 15x slower); sleeping at once
costs each parallel region a wake-up (1.36x idle): so a short spin where the cores are idle at start, else
passive (docs/speed.md). OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_NUM_THREADS and train.threads override it."""
import os
import time


def busy_seconds() -> float:
    """Seconds the machine's cores have been busy since boot, less this process's own (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK") - sum(os.times()[:2])


def choose_wait_policy(seconds: float = 0.2) -> None:
    """OpenMP's wait: a short spin when others kept under half a core busy over `seconds`, else passive."""
    if {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ) or not os.path.exists("/proc/stat"):
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    before = busy_seconds()
    time.sleep(seconds)
    if busy_seconds() - before < 0.5 * seconds:
        os.environ["GOMP_SPINCOUNT"] = "1000"


def usable_cores() -> int:
    """The cores this process may run on (a Slurm allocation or a taskset, not the node's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_torch_threads(num_processes: int, threads: int | None = None) -> str:
    """torch's threads: OMP_NUM_THREADS, else train.threads, else the usable cores shared by `num_processes`."""
    import torch
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(threads or max(1, usable_cores() // num_processes))
    return f"{torch.get_num_threads()} torch threads ({usable_cores()} cores, {num_processes} processes)"


choose_wait_policy()
