"""The thread policy (threads.py): how many torch threads, why, and OpenMP's wait policy set before torch loads."""
import ast
import os
import subprocess
import sys
import time

import pytest

from cfgs import schema
from cfgs.schema import ConfigError
from conftest import ROOT, TINY, compose, run_script
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


@pytest.mark.parametrize("script", ["main.py", "main_mp.py", "evaluate.py", "tools/bench.py"])
def test_entry_points_import_threads_before_anything_that_loads_torch(script):
    tree = ast.parse((ROOT / script).read_text())
    first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.ImportFrom) and first.module == "plumbing" and first.names[0].name == "threads"


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


# Threads that follow the load (threads.Governor), where the step's numbers do not depend on the thread count

@pytest.mark.parametrize("others, most, count", [(0.0, 2, 2), (0.3, 2, 2), (1.0, 2, 1), (1.9, 2, 1), (5.0, 4, 3),
                                                 (0.0, 4, 4), (8.0, 4, 1)])
def test_the_governor_gives_torch_the_cores_other_processes_leave_free(eight_cores, monkeypatch, others, most,
                                                                       count):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2 if most == 2 else 8)
    governor = threads.Governor(most, every=0.0, others_busy=lambda: others)
    governor()
    assert eight_cores.get_num_threads() == count


def test_the_governor_checks_the_load_only_when_due(eight_cores):
    calls = []
    governor = threads.Governor(2, every=60.0, others_busy=lambda: calls.append(1) or 0.0)
    governor()
    assert calls == []


def test_the_load_of_other_processes_is_told_from_this_ones_own(monkeypatch):
    clock = {"now": 100.0, "busy_ticks": 0, "own": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(threads, "busy_ticks", lambda cpus: clock["busy_ticks"])
    monkeypatch.setattr(threads.os, "times", lambda: os.times_result((clock["own"], 0.0, 0.0, 0.0, 0.0)))
    others = threads.OthersLoad()
    tick = os.sysconf("SC_CLK_TCK")
    clock.update(now=102.0, busy_ticks=4 * tick, own=2.4)  # 2 s: the cores busy 4 s, 2.4 of them this process's
    assert others() == pytest.approx(0.8)
    clock.update(now=104.0, busy_ticks=6 * tick, own=4.4)  # 2 s more: all of it this process's
    assert others() == pytest.approx(0.0)


WIDER = ["train.batch_size=16", "buffer.context_len=10", "model.embed_dim=32"]  # than the tiny run's


def project_step_setup(hopper_file, *overrides):
    """(cfg, model, data, batch, precision) of a tiny hopper run on the project's model; batch: one sampled batch."""
    import gymnasium as gym
    import numpy as np

    import core
    import utils
    cfg = compose(f"buffer.path={hopper_file}", *overrides)
    env = gym.make(core.env_spec(cfg.env))
    data = core.load_data(cfg, env)
    batch = core.to_device(data.sample(cfg.train.batch_size, np.random.default_rng(0)), utils.pick_device("cpu"))
    precision = utils.pick_precision(cfg.train.precision, utils.pick_device("cpu"))
    return cfg, core.build_model(cfg, data, env), data, batch, precision


def test_torchs_fused_layer_norm_makes_a_steps_numbers_depend_on_the_thread_count(hopper_file):
    import torch

    import core
    cfg, model, _, batch, precision = project_step_setup(hopper_file, *WIDER)
    assert core.same_bits_at_thread_counts(model, batch, cfg.train, "fp32", range(1, 2))  # one count: trivially
    model.embed_ln = torch.nn.LayerNorm(cfg.model.embed_dim)  # torch's own: its weight gradient is summed per thread
    assert not core.same_bits_at_thread_counts(model, batch, cfg.train, precision, range(1, 3))


def test_where_the_check_passes_steps_at_changing_thread_counts_give_the_same_weights(hopper_file, eight_cores):
    import core
    cfg, model, data, batch, precision = project_step_setup(hopper_file, *WIDER)
    if not core.same_bits_at_thread_counts(model, batch, cfg.train, precision, range(1, 3)):
        pytest.skip(f"on this machine the {precision} step's numbers depend on the thread count")
    weights = {}
    for counts in ([2], [1, 2], [2, 2, 1]):
        eight_cores.manual_seed(0)
        twin = core.build_model(cfg, data, core.gym.make(core.env_spec(cfg.env)))
        optimizer = twin.configure_optimizer(cfg.train.lr, cfg.train.weight_decay)
        scheduler = core.warmup_scheduler(optimizer, cfg.train.warmup_steps)
        twin.train()
        for step in range(6):
            eight_cores.set_num_threads(counts[step % len(counts)])
            core.train_step(twin, optimizer, scheduler, batch, cfg.train, precision)
        weights[tuple(counts)] = [p.detach().clone() for p in twin.parameters()]
    assert all(eight_cores.equal(a, b) for a, b in zip(weights[(2,)], weights[(1, 2)]))
    assert all(eight_cores.equal(a, b) for a, b in zip(weights[(2,)], weights[(2, 2, 1)]))


def test_a_run_says_whether_its_threads_follow_the_load_and_a_fixed_count_keeps_them(hopper_file, eight_cores,
                                                                                    caplog):
    import core
    cfg, model, _, batch, precision = project_step_setup(hopper_file, *WIDER)
    eight_cores.set_num_threads(2)
    with caplog.at_level("INFO", logger="core"):
        governor = core.thread_governor(cfg, model, batch, precision)
    follows = isinstance(governor, threads.Governor)
    assert ("torch threads follow the load, 1 to 2" if follows else "torch threads stay at 2") in caplog.text
    fixed, *_ = project_step_setup(hopper_file, *WIDER, "train.threads=2")
    assert not isinstance(core.thread_governor(fixed, model, batch, precision), threads.Governor)


def test_where_the_check_passes_a_run_gives_the_same_csvs_at_one_thread_and_two(hopper_file, tmp_path):
    import core
    cfg, model, _, batch, precision = project_step_setup(hopper_file)  # the tiny run's model and a batch
    if not core.same_bits_at_thread_counts(model, batch, cfg.train, precision, range(1, 3)):
        pytest.skip(f"on this machine the {precision} step's numbers depend on the thread count")
    tables = []
    for count in ("1", "2"):
        run_dir = tmp_path / f"threads{count}"
        run_script("main.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}", "seeds=[0]",
                   env={"OMP_NUM_THREADS": count}, check=True, fresh=True)
        tables.append([(run_dir / "seed0" / name).read_bytes() for name in ("train.csv", "eval.csv")])
    assert tables[0] == tables[1]
