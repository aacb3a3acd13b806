"""The tests' way to start an entry point (tests/entry.py) gives what `python <script>` gives."""
import signal
import subprocess
import sys
import time

import pytest

import entry
from conftest import entry_env

SCRIPTS = {
    "runs": "import json, os, sys\nprint(json.dumps([sys.argv[1:], os.getcwd(), sys.path[0], os.environ['X'], "
            "__name__]))\nprint('to stderr', file=sys.stderr)",
    "exits with a message, then atexit": "import atexit, sys\natexit.register(print, 'at exit', file=sys.stderr)\n"
                                         "print('partial output')\nsys.exit('error: a one-line message')",
    "raises": "def fail():\n    raise ValueError('boom')\n\nfail()",
    "exits with a code": "raise SystemExit(3)",
    "is interrupted": "raise KeyboardInterrupt",
    "pickles a __main__ function at exit": "import atexit, pickle\ndef f():\n    pass\n\n"
                                           "atexit.register(lambda: print(len(pickle.dumps(f)) > 0))",
    "joins its threads": "import threading, time\n"
                         "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start()",
}


def run_both(script, env, *args):
    """The script run by a new interpreter and by tests/entry.py: two CompletedProcesses."""
    real = subprocess.run([sys.executable, str(script), *args], cwd=script.parent.parent, env=env,
                          capture_output=True, text=True)
    return real, entry.run(script, *args, cwd=script.parent.parent, env=env)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_forked_script_prints_and_ends_as_a_new_interpreter(tmp_path, name):
    (tmp_path / "code").mkdir()
    script = tmp_path / "code" / "script.py"
    script.write_text(SCRIPTS[name] + "\n")
    real, forked = run_both(script, entry_env({"X": "x"}), "a", "b=1")
    assert (forked.stdout, forked.stderr, forked.returncode) == (real.stdout, real.stderr, real.returncode)


def test_an_environment_read_at_start_gets_a_new_interpreter(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import builtins\nbuiltins.CUSTOMIZED = True\n")
    script = tmp_path / "code" / "script.py"
    script.write_text("print(CUSTOMIZED)\n")
    real, started = run_both(script, entry_env({"PYTHONPATH": str(tmp_path / "site")}))
    assert started.stdout == real.stdout == "True\n"


def test_a_signal_ends_a_forked_script_as_it_ends_a_new_interpreter(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import pathlib, time\nprint('started')\npathlib.Path('started').touch()\ntime.sleep(60)\n")
    started = entry.start(script, cwd=tmp_path, env=entry_env(), new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    started.send_signal(signal.SIGTERM)
    assert started.communicate(timeout=60) == ("", "") and started.returncode == -signal.SIGTERM  # unflushed
