"""The entry points as the tests start them: `python <script> <args>` in a folder, with an environment.

A new interpreter spends ~5 s importing torch (with torch._dynamo, which the first optimizer step imports), MuJoCo,
Hydra and matplotlib; the tests start ~50 of them. So most are forked instead from a warm interpreter that imported
those once (multiprocessing's forkserver, which runs no torch op, so no thread pool is forked). The child runs the
script as `__main__` with its argv, working folder, environment, `sys.path` and stdout/stderr, and ends as Python
would: SystemExit's code or message, the traceback of an uncaught exception, threads joined and atexit handlers run,
death by SIGINT on an uncaught Ctrl-C. What it shares with the warm interpreter: the modules already imported, the
hash seed, multiprocessing's process identity, and no interpreter finalization (objects are not collected at exit).
So a run gets a real `python <script>` where that could matter: `fresh=True` (the tests of determinism and one
run of each entry point), or an environment that differs in what is read at start (PYTHONPATH of the fault
injection, thread counts).
"""
import atexit
import functools
import json
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import types
import weakref

WARM_MODULES = ["torch", "torch._dynamo", "gymnasium", "gymnasium.envs.mujoco", "mujoco", "hydra",
                "hydra._internal.utils", "hydra._internal.hydra", "omegaconf", "h5py", "matplotlib.pyplot", "tqdm"]
STARTUP_ENV = {"PYTHONWARNINGS": "ignore", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}  # for every entry point
WARM_ENV = {**os.environ, **STARTUP_ENV}  # the warm interpreter's: the tests' environment and STARTUP_ENV
READ_AT_START = ("PYTHON", "OMP_", "MKL_", "KMP_", "TORCH", "MUJOCO_", "MPL", "LD_")  # read at start or at import
warm = multiprocessing.get_context("forkserver")
warm.set_forkserver_preload(WARM_MODULES)
started = []  # the entries of the current test


def needs_new_interpreter(env):
    """Whether env differs from the warm interpreter's in a variable read at start."""
    read_at_start = lambda e: {k: v for k, v in e.items() if k.startswith(READ_AT_START)}  # noqa: E731
    return read_at_start(env) != read_at_start(WARM_ENV)


@functools.cache
def fresh_sys_path():
    """sys.path of `python <script>` here, after its script's folder."""
    code = "import json, sys; print(json.dumps(sys.path[1:]))"
    return json.loads(subprocess.run([sys.executable, "-c", code], env=WARM_ENV, capture_output=True, text=True,
                                     check=True).stdout)


def become_script(script, args, cwd, env, sys_path, out, err, new_session):
    """The forked child: become `python script *args` in cwd with env, and end as that process would."""
    if new_session:
        os.setsid()
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY)
        os.dup2(file, fd)
        os.close(file)
    encoding, errors = sys.__stdout__.encoding, sys.__stdout__.errors  # the warm interpreter's: the same locale
    sys.stdout = open(1, "w", encoding=encoding, errors=errors, closefd=False)  # to a file: block-buffered
    sys.stderr = open(2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv, sys.path[:] = [script, *args], [os.path.dirname(script), *sys_path]
    multiprocessing.set_start_method(None, force=True)  # the platform's default again, not the forkserver
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # fresh entropy, as in a new interpreter (Python's random reseeds itself)
    sys.modules["__main__"] = main = types.ModuleType("__main__")
    main.__file__ = script
    code, interrupted = 0, False
    try:
        with open(script) as f:
            exec(compile(f.read(), script, "exec"), main.__dict__)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # from the script's own frame on
        code, interrupted = 1, isinstance(e, KeyboardInterrupt)
    # The interpreter's end, by CPython's own (private) steps: threads and their shutdown hooks (executors'), atexit.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:  # Python ends an uncaught Ctrl-C with the signal itself
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(code)


class Entry:
    """A started entry point, with what the tests use of subprocess.Popen: pid, send_signal, poll, wait,
    communicate (text), returncode (negative: the signal that ended it)."""

    def __init__(self, script, args, cwd, env, new_session, fresh):
        self.args = [sys.executable, str(script), *args]
        self.new_session = new_session
        logs = tempfile.mkdtemp(prefix="entry-")
        weakref.finalize(self, shutil.rmtree, logs, True)
        self.out, self.err = os.path.join(logs, "stdout"), os.path.join(logs, "stderr")
        self.forked = not (fresh or needs_new_interpreter(env))
        with open(self.out, "w") as out, open(self.err, "w") as err:
            if self.forked:
                warm_up()
                self.process = warm.Process(target=become_script, args=(
                    str(script), list(args), str(cwd), env, fresh_sys_path(), self.out, self.err, new_session))
                self.process.start()
            else:
                self.process = subprocess.Popen(self.args, cwd=cwd, env=env, stdout=out, stderr=err,
                                                start_new_session=new_session)
        self.pid = self.process.pid
        started.append(self)

    @property
    def returncode(self):
        return self.process.exitcode if self.forked else self.process.poll()

    def poll(self):
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout=None):
        if not self.forked:
            return self.process.wait(timeout)
        self.process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self):
        """SIGKILL to it (to its session, if it has one), and wait for its end."""
        if self.poll() is None:
            os.killpg(self.pid, signal.SIGKILL) if self.new_session else os.kill(self.pid, signal.SIGKILL)
            self.wait()

    def communicate(self, timeout=None):
        """Wait for the end; its stdout and stderr. Past the timeout it is killed and TimeoutExpired raised."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        with open(self.out) as out, open(self.err) as err:
            return out.read(), err.read()


def warm_up():
    """Launch the warm interpreter (once per test process) in WARM_ENV: it imports WARM_MODULES."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(WARM_ENV)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kill_leftovers():
    """Kill the entries a test left running (a failed one): a forked child would keep pytest from exiting."""
    while started:
        started.pop().kill()


def start(script, *args, cwd, env, new_session=False, fresh=False):
    """`python script *args` in cwd with the environment env, started; an Entry. fresh: a new interpreter."""
    return Entry(script, args, cwd, env, new_session, fresh)


def run(script, *args, cwd, env, fresh=False, timeout=600):
    """`python script *args` in cwd with env, to its end: a subprocess.CompletedProcess (text)."""
    process = start(script, *args, cwd=cwd, env=env, fresh=fresh)
    out, err = process.communicate(timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
