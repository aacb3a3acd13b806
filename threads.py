"""How many torch threads a process uses, and how its OpenMP threads wait: a policy that holds on a busy machine.

Imported first by the entry points (main.py, main_mp.py, evaluate.py, bench.py), before anything imports torch:
torch's OpenMP runtime (libgomp) reads OMP_WAIT_POLICY once, when it loads, so it must be in the environment
by then, and seed processes (main_mp.py's, Hydra's launchers') inherit it. PASSIVE: a thread that reaches a
barrier first sleeps instead of spinning. With spinning threads (libgomp's default spins ~300 000 times, ACTIVE
forever) a step of two threads beside other CPU-bound processes waits at every barrier for a thread that has
lost its core: 1348 ms a step instead of 88 ms with one thread (issue 31). docs/speed.md has the measurements.

OMP_WAIT_POLICY or OMP_NUM_THREADS in the environment, and train.threads in the config, override the policy.
"""
import os
import sys

WAIT_POLICY = "PASSIVE"
if "torch" not in sys.modules:  # later it would change nothing, and the log would say what is not so
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
WAITING = os.environ.get("OMP_WAIT_POLICY", "libgomp's default (spin, then sleep)").lower() + (
    f" (GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']})" if os.environ.get("GOMP_SPINCOUNT") else "")


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
