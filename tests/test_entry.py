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
            "__name__, 'torch' in sys.modules]))\nprint('to stderr', file=sys.stderr)",
    "exits": "import sys\nprint('partial output')\nsys.exit('error: a one-line message')",
    "raises": "def fail():\n    raise ValueError('boom')\n\nfail()",
    "exits with a code": "raise SystemExit(3)",
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_forked_script_prints_and_ends_as_a_new_interpreter(tmp_path, name):
    (tmp_path / "code").mkdir()
    script = tmp_path / "code" / "script.py"
    script.write_text(SCRIPTS[name] + "\n")
    env = entry_env({"X": "x"})
    real = subprocess.run([sys.executable, str(script), "a", "b=1"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    forked = entry.run(script, "a", "b=1", cwd=tmp_path, env=env)
    assert forked.stdout.replace("true]", "false]") == real.stdout  # the warm interpreter has imported torch
    assert (forked.stderr, forked.returncode) == (real.stderr, real.returncode)


def test_a_signal_ends_a_forked_script_as_it_ends_a_new_interpreter(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import pathlib, time\nprint('started')\npathlib.Path('started').touch()\ntime.sleep(60)\n")
    started = entry.start(script, cwd=tmp_path, env=entry_env(), new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    started.send_signal(signal.SIGTERM)
    assert started.communicate(timeout=60) == ("", "") and started.returncode == -signal.SIGTERM  # unflushed
