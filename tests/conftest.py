"""Fixtures: tiny D4RL-layout hdf5 files and a helper that runs the entry points on them."""
from plumbing import threads  # noqa: I001  first, before torch loads: the tests' processes wait passively too (threads.py)

import os
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import hydra
import numpy as np
import pytest
from filelock import FileLock
from omegaconf import OmegaConf

import cfgs.schema  # noqa: F401  registers the schema Hydra composes with
import entry

ROOT = Path(__file__).resolve().parents[1]
# The in-process training of each pytest-xdist worker: the workers share the cores (entry points: 1 thread each)
threads.set_torch_threads(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
HOPPER_OBS, HOPPER_ACT = 11, 3
# Trajectory lengths and how each ends: the 3- and 4-step ones are shorter than a context of 5;
# the last one is cut off by the end of the file, as in D4RL.
TRAJECTORIES = [(30, "terminal"), (3, "terminal"), (50, "timeout"), (4, "timeout"), (25, "terminal"), (12, "cut")]


def write_d4rl_file(path, trajectories=TRAJECTORIES, obs_dim=HOPPER_OBS, act_dim=HOPPER_ACT, seed=0):
    """A D4RL-layout hdf5 file; rewards of trajectory i are i + 1 at every step."""
    rng = np.random.default_rng(seed)
    n = sum(length for length, _ in trajectories)
    rewards, terminals, timeouts = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
    start = 0
    for i, (length, end) in enumerate(trajectories):
        rewards[start:start + length] = i + 1
        terminals[start + length - 1] = end == "terminal"
        timeouts[start + length - 1] = end == "timeout"
        start += length
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
        f["rewards"] = rewards
        f["terminals"] = terminals
        f["timeouts"] = timeouts
    return path


@pytest.fixture
def hopper_file(tmp_path):
    return write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")


CRASH_ENV = {"PYTHONPATH": str(ROOT / "tests" / "fault_injection")}  # with DT_CRASH=<seed>:<raise|kill|nan>
TINY = ["env=hopper", "env.max_episode_len=100", "train.steps=20", "train.log_every=5", "train.eval_every=10",
        "train.checkpoint_every=5", "train.warmup_steps=5", "train.batch_size=8", "buffer.context_len=5",
        "model.embed_dim=16", "model.n_layers=1", "eval.episodes=2", "eval.final_episodes=2", "eval.video=false",
        "device=cpu"]


def shared_run(tmp_path_factory, name, *overrides):
    """A tiny run on its own dataset file, trained once per test session (the pytest-xdist workers share it).
    Returns its folder, its dataset file and the overrides that made it; read it, or copy it (copy_run) to change
    it."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker's folder: this session's is above
        root = root.parent
    run_dir, path = root / name, root / f"{name}_data" / "hopper_medium-v2.hdf5"
    overrides, trained = [f"buffer.path={path}", *overrides], root / f"{name}.trained"
    with FileLock(root / f"{name}.lock"):
        if not trained.exists():  # not yet, or a failed try: its folder goes
            shutil.rmtree(run_dir, ignore_errors=True)
            path.parent.mkdir(exist_ok=True)
            write_d4rl_file(path)
            run_entry("main.py", run_dir, *overrides)
            trained.touch()
    return run_dir, path, overrides


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run of seeds 0 and 1, and its dataset file."""
    run_dir, path, _ = shared_run(tmp_path_factory, "tiny_run", "seeds=[0,1]")
    return run_dir, path


@pytest.fixture(scope="session")
def long_run(tmp_path_factory):
    """A 100-step run of seed 0 (two evals), and the overrides that made it: an interrupted one resumes to it."""
    run_dir, _, overrides = shared_run(tmp_path_factory, "long_run", "seeds=[0]", "train.steps=100",
                                       "train.eval_every=50")
    return run_dir, overrides


@pytest.fixture
def small_frames(monkeypatch):
    """Rendering envs film 96 x 96 frames: what is filmed is tested, not the resolution."""
    import gymnasium as gym
    make = gym.make

    def small(*args, **kw):
        return make(*args, **kw, width=96, height=96) if "render_mode" in kw else make(*args, **kw)
    monkeypatch.setattr(gym, "make", small)


def copy_run(run_dir, dest):
    """A copy of a run folder to change (the shared tiny_run stays as trained)."""
    return Path(shutil.copytree(run_dir, dest))


def entry_env(extra=None):
    """The environment of an entry point the tests start: the tests' own, one torch thread (tiny models), no
    warnings (entry.STARTUP_ENV), and extra."""
    return {**entry.WARM_ENV, **(extra or {})}


def start_script(script, *args, cwd=None, env=None, new_session=False):
    """`python <script> <args>` (a project entry point) started in cwd (default: the tests' working folder, outside
    the project) with entry_env(env): a Popen-like Entry."""
    return entry.start(ROOT / script, *args, cwd=cwd or os.getcwd(), env=entry_env(env), new_session=new_session)


def run_script(script, *args, cwd=None, env=None, check=False, fresh=False):
    """`python <script> <args>` in cwd (default: the tests' working folder, outside the project) with
    entry_env(env), to its end: a CompletedProcess. check: fail the test, with the output, if it failed. fresh: in
    a new interpreter (tests/entry.py says when that matters)."""
    result = entry.run(ROOT / script, *args, cwd=cwd or os.getcwd(), env=entry_env(env), fresh=fresh)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(autouse=True, scope="session")
def working_folder_outside_the_project(tmp_path_factory):
    """The tests work in a folder of their own: what lands in the working folder (MuJoCo's MUJOCO_LOG.TXT of an
    unstable simulation, or of loading HalfCheetah's model) leaves nothing in the project's tree; so do the entry
    points the tests start (start_script, run_script)."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture(autouse=True)
def no_entry_left_running():
    """After each test, the entry points it left running (it failed midway) are killed."""
    yield
    entry.kill_leftovers()


def run_entry(script, run_dir, *overrides, check=True, env=None):
    """Run main.py / main_mp.py with the tiny config into run_dir; return the CompletedProcess."""
    return run_script(script, *TINY, f"hydra.run.dir={run_dir}", *overrides, check=check, env=env)


SHORT_MULTIRUN = [*TINY, "seeds=[0]", "eval.final_episodes=1", "eval.episodes=1"]


def multirun(cwd, *overrides, script="main.py", env=None, wait=True):
    """python main.py -m ... in `cwd` (its runs/ folder), on the tiny D4RL file in cwd (data_dir): a
    CompletedProcess, or with wait=False the started Entry."""
    process = start_script(script, "-m", *SHORT_MULTIRUN, *overrides, cwd=cwd,
                           env={"D4RL_DATASET_DIR": str(cwd), **(env or {})})
    if not wait:
        return process
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def data_dir(tmp_path):
    """tmp_path, holding a tiny hopper_medium-v2.hdf5 (D4RL_DATASET_DIR of a multirun)."""
    write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    return tmp_path


def compose(*overrides, tiny=True):
    """The resolved config main.py runs with (the tiny settings and) these overrides (Hydra's compose API)."""
    with hydra.initialize_config_dir(str(ROOT / "cfgs"), version_base="1.3"):
        cfg = hydra.compose("config", overrides=[*(TINY if tiny else []), *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def wait_for_training(run_dir, timeout=120):
    """Until every seed of run_dir has logged a few steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        csvs = list(run_dir.glob("seed*/train.csv"))
        if csvs and all(len(p.read_text().splitlines()) > 3 for p in csvs):
            return
        time.sleep(0.05)
    raise AssertionError("training did not start")
