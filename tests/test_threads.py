"""The thread policy (plumbing/threads.py): how many torch threads, and OpenMP's wait set before torch loads."""
import ast
import os
import subprocess
import sys
import time

import pytest

from cfgs import schema
from cfgs.schema import ConfigError
from conftest import ROOT, compose
from plumbing import threads


@pytest.fixture
def eight_cores(monkeypatch):
    """8 usable cores, no OMP_NUM_THREADS, and torch's thread count restored afterwards."""
    import torch
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield torch
    torch.set_num_threads(before)


def test_the_usable_cores_are_shared_between_the_processes(eight_cores):
    assert threads.set_torch_threads(num_processes=2) == "4 torch threads (8 cores, 2 processes)"
    assert eight_cores.get_num_threads() == 4


def test_train_threads_overrides_the_share(eight_cores):
    assert threads.set_torch_threads(num_processes=2, threads=3).startswith("3 torch threads")
    assert eight_cores.get_num_threads() == 3


def test_omp_num_threads_overrides_train_threads(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    eight_cores.set_num_threads(1)  # what torch starts with under OMP_NUM_THREADS=1
    assert threads.set_torch_threads(num_processes=2, threads=3).startswith("1 torch threads")


@pytest.mark.parametrize("script", ["main.py", "main_mp.py", "evaluate.py", "tools/bench.py"])
def test_entry_points_import_threads_before_anything_that_loads_torch(script):
    tree = ast.parse((ROOT / script).read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    first = next(node for node in imports if getattr(node, "module", None) != "pathlib"
                 and not (isinstance(node, ast.Import) and node.names[0].name == "sys"))  # tools/bench.py's path
    assert isinstance(first, ast.ImportFrom) and first.module == "plumbing" and first.names[0].name == "threads"


@pytest.fixture
def no_openmp_env(monkeypatch):
    """An environment without OpenMP settings (restored afterwards)."""
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("others_busy, spins", [(0.1, "1000"), (1.5, None)])
def test_threads_spin_briefly_on_an_idle_machine_and_wait_passively_on_a_busy_one(no_openmp_env, others_busy, spins):
    readings = iter([100.0, 100.0 + others_busy * 0.2])  # busy seconds before and after the 0.2 s look
    no_openmp_env.setattr(threads, "busy_seconds", lambda: next(readings))
    threads.choose_wait_policy(seconds=0.2)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ.get("GOMP_SPINCOUNT") == spins


@pytest.mark.parametrize("given", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}])
def test_an_openmp_wait_in_the_environment_is_kept(no_openmp_env, given):
    for key, value in given.items():
        no_openmp_env.setenv(key, value)
    no_openmp_env.setattr(threads, "busy_seconds", lambda: pytest.fail("no measurement needed"))
    threads.choose_wait_policy()
    assert {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ} == given


def test_the_wait_is_in_the_environment_before_torch_loads():
    code = "from plumbing import threads; import os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


def test_the_busy_time_of_another_process_is_seen():
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        before = threads.busy_seconds()
        time.sleep(0.5)
        assert threads.busy_seconds() - before >= 0.4
    finally:
        competitor.kill()
        competitor.wait()


def test_a_thread_count_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"^train.threads=0: give null"):
        schema.check(compose("train.threads=0"))


def test_the_log_says_how_many_threads_a_run_uses(tiny_run):
    run_dir, _ = tiny_run
    assert "1 torch threads (" in (run_dir / "main.log").read_text()
