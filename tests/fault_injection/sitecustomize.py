"""Fault injection for the tests: with DT_CRASH=<seed>:<raise|kill|nan> set and this folder on PYTHONPATH,
every Python process (spawned seed processes too) wraps core.train so that this seed crashes (nan: stops
as on a NaN loss)."""
import importlib.abc
import importlib.util
import os
import signal
import sys


class _WrapCoreTrain(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "core":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("core")
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            train, (seed, how) = module.train, os.environ["DT_CRASH"].split(":")

            def crashing_train(cfg, s, run):
                if s == int(seed):
                    if how == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    if how == "nan":
                        module.check_finite(float("nan"), s, 5, run)
                    raise RuntimeError(f"injected crash in seed {s}")
                return train(cfg, s, run)

            module.train = crashing_train

        spec.loader.exec_module = exec_and_wrap
        return spec


if "DT_CRASH" in os.environ:
    sys.meta_path.insert(0, _WrapCoreTrain())
