"""The thread policy (threads.py): how many torch threads, why, and OpenMP's wait policy set before torch loads."""
import ast
import subprocess
import sys

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


@pytest.mark.parametrize("given, waits", [(None, "passive"), ("ACTIVE", "active")])
def test_openmp_waits_passively_unless_the_environment_says_otherwise(given, waits):
    env = {"PATH": "/usr/bin:/bin", **({"OMP_WAIT_POLICY": given} if given else {})}
    code = "import threads, os, torch; print(os.environ['OMP_WAIT_POLICY'], threads.WAITING)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [waits.upper(), waits]


def test_a_thread_count_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"^train.threads=0: give null"):
        schema.check(compose("train.threads=0"))


def test_the_log_says_how_many_threads_a_run_uses_and_why(tiny_run):
    run_dir, _ = tiny_run
    assert "1 torch thread (OMP_NUM_THREADS=1); OpenMP threads wait" in (run_dir / "main.log").read_text()
