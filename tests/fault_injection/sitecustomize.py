"""Fault injection for the tests, with this folder on PYTHONPATH, in every Python process (spawned seed processes
too):
    DT_CRASH=<seed>:<raise|kill|nan>      core.train crashes for this seed (nan: stops as on a NaN loss)
    DT_SIGNAL=<function>:<SIGNAME>        core.<function> first sends the signal to its own process (a stop signal
                                          that arrives just as, say, the final evaluation starts), then runs
    DT_WRITE_ERROR=<file name>:<ERRNO>    utils.atomic_write_bytes fails from the first write of a file of that name
                                          on, every later write too: ENOSPC as on a full disk (its data goes to
                                          /dev/full), another errno (EROFS: a read-only folder) as its temporary
                                          file is made
"""
import errno
import importlib.abc
import importlib.util
import os
import signal
import sys
import types


def wrap_train(module, seed, how):
    train = module.train

    def crashing_train(cfg, s, run, *args):
        if s == int(seed):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "nan":
                sys.modules["plumbing.record"].check_finite(float("nan"), s, 5, run)
            raise RuntimeError(f"injected crash in seed {s}")
        return train(cfg, s, run, *args)

    module.train = crashing_train


def wrap_with_signal(module, name, signal_name):
    function = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.Signals[signal_name])
        return function(*args, **kwargs)

    setattr(module, name, signalled)


def fail_writes(module, name, errno_name):
    mkstemp, failing = module.tempfile.mkstemp, []

    def failing_mkstemp(*args, prefix="", **kwargs):
        if prefix != f".{name}." and not failing:
            return mkstemp(*args, prefix=prefix, **kwargs)
        failing.append(prefix)
        code = getattr(errno, errno_name)
        if code != errno.ENOSPC:
            raise OSError(code, os.strerror(code))
        fd, tmp = mkstemp(*args, prefix=prefix, **kwargs)  # a temporary file the write leaves to remove
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)  # its writes: ENOSPC
        os.close(full)
        return fd, tmp

    module.tempfile = types.SimpleNamespace(mkstemp=failing_mkstemp)  # utils' own name for tempfile only


WRAPPERS = {"core": {"DT_CRASH": wrap_train, "DT_SIGNAL": wrap_with_signal}, "utils": {"DT_WRITE_ERROR": fail_writes}}


class _Wrap(importlib.abc.MetaPathFinder):
    """Wraps a module of WRAPPERS as it is first imported, as its variables ask."""

    wrapped = set()

    def find_spec(self, name, path, target=None):
        if name not in WRAPPERS or name in self.wrapped:
            return None
        self.wrapped.add(name)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            for variable, wrap in WRAPPERS[name].items():
                if variable in os.environ:
                    wrap(module, *os.environ[variable].split(":"))

        spec.loader.exec_module = exec_and_wrap
        return spec


if any(variable in os.environ for wrappers in WRAPPERS.values() for variable in wrappers):
    sys.meta_path.insert(0, _Wrap())
