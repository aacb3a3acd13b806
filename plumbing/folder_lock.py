"""One process per run folder: a flock on the folder for the process's life (no stale lock), no orphan writing in it."""
import contextlib
import ctypes
import errno
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

from cfgs.schema import ConfigError
from plumbing.runfolder import RunError

_held = {}  # resolved folder -> the open file descriptor that holds its lock
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class FolderInUseError(RunError, ConfigError):
    """Another process holds the run folder (a ConfigError too: raised in Hydra's resolvers it reaches cli)."""


def lock_run_folder(folder: str | Path) -> None:
    """Hold the lock of `folder` until this process ends (no other), or FolderInUseError naming the holder."""
    folder = Path(folder).resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)  # not inherited by spawned processes (O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise RunError(f"{folder}: cannot be locked ({e.strerror})") from None
        raise FolderInUseError(f"{folder}: in use by another process (pid {lock_holder(folder) or 'unknown'}); wait "
                               f"for it to end, or stop it, then run again") from None
    for other in list(_held):
        os.close(_held.pop(other))
    _held[folder] = fd


def lock_holder(folder: str | Path) -> int | None:
    """The pid holding the flock of `folder` (Linux: /proc/locks), or None where it cannot be told."""
    stat = os.stat(folder)
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    with contextlib.suppress(OSError):  # no /proc/locks
        parts = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
        return next((int(p[4]) for p in parts if len(p) > 5 and p[1] == "FLOCK" and p[5] == inode), None)
    return None


def die_with_parent(parent_pid: int) -> None:
    """This child process gets SIGKILL when its parent ends: no orphan goes on writing into a run folder."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent_pid:  # the parent ended before the line above
        os.kill(os.getpid(), signal.SIGKILL)
