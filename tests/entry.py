"""The entry points as the tests start them: `python <script> <args>` in a folder, with an environment.

A new interpreter spends ~5 s importing torch (with torch._dynamo, which the first optimizer step imports), MuJoCo,
Hydra and matplotlib; the tests start ~50 of them. So each one is forked instead from a warm interpreter that has
imported those once (multiprocessing's forkserver, which runs no torch op, so no thread pool is forked). The child
is what `python <script>` would be: its own process (pid, signals, session), `__main__` run from the script with
its argv, working folder, environment, `sys.path` and exit code, its stdout and stderr captured, its atexit
handlers run. A run whose environment changes PYTHONPATH (the fault injection's sitecustomize, which only a new
interpreter reads) gets a real `python <script>`.
"""
import atexit
import json
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

WARM_MODULES = ["torch", "torch._dynamo", "gymnasium", "gymnasium.envs.mujoco", "mujoco", "hydra",
                "hydra._internal.utils", "hydra._internal.hydra", "omegaconf", "h5py", "matplotlib.pyplot", "tqdm"]
# What a new interpreter reads at its start, before any import: the warm one starts with it.
STARTUP_ENV = {"PYTHONWARNINGS": "ignore", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
warm = multiprocessing.get_context("forkserver")
warm.set_forkserver_preload(WARM_MODULES)


def fresh_sys_path():
    """sys.path of `python <script>` here, after its script's folder."""
    code = "import json, sys; print(json.dumps(sys.path[1:]))"
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def run_script(script, args, cwd, env, sys_path, out, err, new_session):
    """The forked child: become `python script *args` in cwd with env, and end as that process would."""
    if new_session:
        os.setsid()
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout = open(1, "w", closefd=False)  # to a file, as a new interpreter's: block-buffered
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # line-buffered
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv, sys.path[:] = [script, *args], [os.path.dirname(script), *sys_path]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise  # the process ends with its code, or prints its message and ends with 1, as Python does
    except BaseException as e:  # Python's report: the traceback from the script's own frame on
        frames = e.__traceback__
        while frames.tb_next and frames.tb_frame.f_code.co_filename != script:
            frames = frames.tb_next
        traceback.print_exception(type(e), e, frames)
        raise SystemExit(1) from None
    finally:  # the interpreter's end: its threads' shutdown hooks (executors), then the atexit handlers
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


class Entry:
    """A started entry point, with what the tests use of subprocess.Popen: pid, send_signal, poll, wait,
    communicate (text), returncode (negative: the signal that ended it)."""

    def __init__(self, script, args, cwd, env, new_session):
        self.args = [sys.executable, str(script), *args]
        self.logs = tempfile.mkdtemp(prefix="entry-")
        self.out, self.err = os.path.join(self.logs, "stdout"), os.path.join(self.logs, "stderr")
        self.forked = env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")
        if self.forked:
            warm_up()
            self.process = warm.Process(target=run_script, args=(
                str(script), list(args), str(cwd), env, FRESH_SYS_PATH, self.out, self.err, new_session))
            self.process.start()
        else:
            with open(self.out, "w") as out, open(self.err, "w") as err:
                self.process = subprocess.Popen(self.args, cwd=cwd, env=env, stdout=out, stderr=err,
                                                start_new_session=new_session)
        self.pid = self.process.pid

    @property
    def returncode(self):
        return self.process.exitcode if self.forked else self.process.poll()

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.forked:
            self.process.join(timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            return self.returncode
        return self.process.wait(timeout)

    def communicate(self, timeout=None):
        """Wait for the end; its stdout and stderr. Past the timeout it is killed and TimeoutExpired raised."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()
            raise
        finally:
            with open(self.out) as out, open(self.err) as err:
                self.output = out.read(), err.read()
            shutil.rmtree(self.logs, ignore_errors=True)
        return self.output


def warm_up():
    """Launch the warm interpreter, once per test process, with the environment a new interpreter reads at its
    start (STARTUP_ENV): it imports WARM_MODULES under it."""
    saved = {name: os.environ.get(name) for name in STARTUP_ENV}
    os.environ.update(STARTUP_ENV)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def start(script, *args, cwd, env, new_session=False):
    """`python script *args` in cwd with the environment env, started; an Entry."""
    return Entry(script, args, cwd, env, new_session)


def run(script, *args, cwd, env, timeout=600):
    """`python script *args` in cwd with env, to its end: a subprocess.CompletedProcess (text)."""
    entry = start(script, *args, cwd=cwd, env=env)
    out, err = entry.communicate(timeout)
    return subprocess.CompletedProcess(entry.args, entry.returncode, out, err)


FRESH_SYS_PATH = fresh_sys_path()
