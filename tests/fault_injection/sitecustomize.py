"""Fault injection for the tests, with this folder on PYTHONPATH, in every Python process (spawned seed processes
too):
    DT_CRASH=<seed>:<raise|kill|nan>      core.train crashes for this seed (nan: stops as on a NaN loss)
    DT_SIGNAL=<function>:<SIGNAME>        core.<function> first sends the signal to its own process (a stop signal
                                          that arrives just as, say, the final evaluation starts), then runs
"""
import importlib.abc
import importlib.util
import os
import signal
import sys


def wrap_train(module, seed, how):
    train = module.train

    def crashing_train(cfg, s, run, *args):
        if s == int(seed):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "nan":
                module.check_finite(float("nan"), s, 5, run)
            raise RuntimeError(f"injected crash in seed {s}")
        return train(cfg, s, run, *args)

    module.train = crashing_train


def wrap_with_signal(module, name, signal_name):
    function = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.Signals[signal_name])
        return function(*args, **kwargs)

    setattr(module, name, signalled)


class _WrapCore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "core":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("core")
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            if "DT_CRASH" in os.environ:
                wrap_train(module, *os.environ["DT_CRASH"].split(":"))
            if "DT_SIGNAL" in os.environ:
                wrap_with_signal(module, *os.environ["DT_SIGNAL"].split(":"))

        spec.loader.exec_module = exec_and_wrap
        return spec


if "DT_CRASH" in os.environ or "DT_SIGNAL" in os.environ:
    sys.meta_path.insert(0, _WrapCore())
