"""The thread policy (threads.py): how many torch threads, why, and OpenMP's wait policy set before torch loads."""
import ast
import os
import subprocess
import sys
import time

import pytest

import threads
from cfgs import schema
from cfgs.schema import ConfigError
from conftest import ROOT, compose


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
    line = threads.set_torch_threads(num_processes=2)
    assert eight_cores.get_num_threads() == 4
    assert line.startswith("4 torch threads (8 usable cores shared by 2 processes)")


def test_train_threads_overrides_the_share(eight_cores):
    assert threads.set_torch_threads(num_processes=2, threads=3).startswith("3 torch threads (train.threads=3)")
    assert eight_cores.get_num_threads() == 3


def test_omp_num_threads_overrides_train_threads(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    eight_cores.set_num_threads(1)  # what torch starts with under OMP_NUM_THREADS=1
    assert threads.set_torch_threads(num_processes=2, threads=3).startswith("1 torch thread (OMP_NUM_THREADS=1)")
    assert eight_cores.get_num_threads() == 1


@pytest.mark.parametrize("script", ["main.py", "main_mp.py", "evaluate.py", "bench.py"])
def test_entry_points_import_threads_before_anything_that_loads_torch(script):
    tree = ast.parse((ROOT / script).read_text())
    first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.Import) and first.names[0].name == "threads"


@pytest.fixture
def no_openmp_env(monkeypatch):
    """An environment without OpenMP settings (restored afterwards)."""
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("busy, spins", [(0.1, "1000"), (1.5, None), (None, None)])
def test_threads_spin_briefly_on_an_idle_machine_and_wait_passively_on_a_busy_one(no_openmp_env, busy, spins):
    no_openmp_env.setattr(threads, "others_busy_cores", lambda: busy)
    said = threads.choose_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and os.environ.get("GOMP_SPINCOUNT") == spins
    assert said == ("spin 1000 times, then sleep (the usable cores were idle at start)" if spins else
                    "passive (other processes kept 1.5 cores busy at start)" if busy else "passive (one thread)")


@pytest.mark.parametrize("given, said", [({"OMP_WAIT_POLICY": "ACTIVE"}, "active (spin)"),
                                         ({"GOMP_SPINCOUNT": "5"}, "spin 5 times, then sleep"),
                                         ({"OMP_WAIT_POLICY": "passive"}, "passive")])
def test_an_openmp_wait_in_the_environment_is_kept(no_openmp_env, given, said):
    for key, value in given.items():
        no_openmp_env.setenv(key, value)
    no_openmp_env.setattr(threads, "others_busy_cores", lambda: pytest.fail("no measurement needed"))
    assert threads.choose_wait_policy() == f"{said} (from the environment)"
    assert {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ} == given


def test_the_wait_is_set_before_torch_loads_and_said_in_the_log_line():
    env = {"PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "ACTIVE"}
    code = "import threads, os, torch; print(threads.set_torch_threads(1))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("OpenMP threads wait active (spin) (from the environment)")


def test_the_busy_cores_of_another_process_are_seen():
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.others_busy_cores(seconds=0.5) >= 0.5
    finally:
        competitor.kill()
        competitor.wait()


def test_a_thread_count_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"^train.threads=0: give null"):
        schema.check(compose("train.threads=0"))


def test_the_log_says_how_many_threads_a_run_uses_and_why(tiny_run):
    run_dir, _ = tiny_run
    assert "1 torch thread (OMP_NUM_THREADS=1); OpenMP threads wait" in (run_dir / "main.log").read_text()
