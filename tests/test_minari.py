"""Minari datasets as published: reference scores from the dataset or the command line, and the env built from
the dataset's spec, kwargs included. The datasets are built with Minari's public
create_dataset_from_buffers (no network, no jax)."""
import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import buffer
import core
import utils
from conftest import run_entry, run_script
from plumbing import sources

pytest.importorskip("minari")
LENGTHS = (30, 12, 40, 25)  # episode i has reward i + 1 at every step


def write_minari_dataset(dataset_id, env, ref_scores=None, lengths=LENGTHS, seed=0):
    """A Minari dataset in $MINARI_DATASETS_PATH, made by Minari's public API; with ref_scores: (min, max)."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(seed)
    episodes = [EpisodeBuffer(observations=rng.normal(size=(n + 1, obs_dim)), actions=rng.uniform(-1, 1, (n, act_dim)),
                              rewards=np.full(n, i + 1.0), terminations=np.arange(n) == n - 1,
                              truncations=np.zeros(n, bool))
                for i, n in enumerate(lengths)]
    ref_min, ref_max = ref_scores or (None, None)
    return minari.create_dataset_from_buffers(dataset_id, episodes, env=env, eval_env=env.spec, ref_min_score=ref_min,
                                              ref_max_score=ref_max, algorithm_name="test fixture", author="tests",
                                              author_email="tests@localhost", description="a tiny test dataset")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    """An empty Minari datasets folder, $MINARI_DATASETS_PATH here and in the entry points the test starts."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def train_and_evaluate(run_dir, root, dataset_id, *overrides):
    """A tiny run of seed 0 on a Minari dataset, then a one-target sweep; returns its saved config."""
    env = {"MINARI_DATASETS_PATH": str(root)}
    run_entry("main.py", run_dir, "buffer.source=minari", f"buffer.dataset={dataset_id}", "seeds=[0]", *overrides,
              env=env)
    run_script("evaluate.py", f"run={run_dir}", "targets=[500]", "episodes=1", check=True, env=env)
    return OmegaConf.load(run_dir / "config.yaml")


def assert_scored_on(run_dir, ref_min, ref_max):
    """The final eval and the sweep are normalized with these reference scores."""
    final = utils.read_csv(run_dir / "seed0" / "eval.csv")
    assert np.allclose(final["score_mean"], utils.normalized_score(final["return_mean"], ref_min, ref_max))
    rows = utils.read_csv(run_dir / "sweep_final.csv")
    assert np.allclose(rows["score"], utils.normalized_score(rows["return"], ref_min, ref_max))


def test_a_dataset_with_reference_scores_trains_and_evaluates_on_them_in_its_env_with_its_kwargs(tmp_path, minari_root):
    write_minari_dataset("mujoco/hopper/tiny-v0", gym.make("Hopper-v5", healthy_reward=2.0), ref_scores=(-20, 3000))
    cfg = train_and_evaluate(tmp_path / "run", minari_root, "mujoco/hopper/tiny-v0")
    assert (cfg.env.id, cfg.env.ref_min_score, cfg.env.ref_max_score) == ("Hopper-v5", -20.0, 3000.0)
    assert cfg.env.ref_source == "minari" and OmegaConf.to_container(cfg.env.kwargs) == {"healthy_reward": 2.0}
    assert_scored_on(tmp_path / "run", -20.0, 3000.0)
    assert gym.make(core.env_spec(cfg.env)).unwrapped._healthy_reward == 2.0, "the eval env has the dataset's kwargs"

    transitions = buffer.load_transitions(cfg, gym.make("Hopper-v5"))
    _, lengths, returns = transitions.trajectories()
    assert list(lengths) == list(LENGTHS) and list(returns) == [30.0, 24.0, 120.0, 100.0]


def test_a_dataset_without_reference_scores_takes_those_given_on_the_command_line(tmp_path, minari_root):
    write_minari_dataset("mujoco/hopper/medium-v0", gym.make("Hopper-v5"))
    cfg = train_and_evaluate(tmp_path / "run", minari_root, "mujoco/hopper/medium-v0", "env.ref_min_score=-5",
                             "env.ref_max_score=500")
    assert (cfg.env.ref_min_score, cfg.env.ref_max_score, cfg.env.ref_source) == (-5.0, 500.0, "command-line")
    assert_scored_on(tmp_path / "run", -5.0, 500.0)


def test_the_datasets_own_reference_scores_win_over_the_command_line(minari_root):
    write_minari_dataset("mujoco/hopper/medium-v0", gym.make("Hopper-v5"), ref_scores=(-20, 3000))
    facts = sources.minari_facts("mujoco/hopper/medium-v0", command_line=(0.0, 1.0))
    scores = (facts["env.ref_min_score"], facts["env.ref_max_score"], facts["env.ref_source"])
    assert scores == (-20.0, 3000.0, "minari")


def test_a_dataset_without_reference_scores_stops_with_one_line_naming_the_overrides(tmp_path, minari_root):
    write_minari_dataset("mujoco/hopper/medium-v0", gym.make("Hopper-v5"))
    write_minari_dataset("mujoco/hopper/expert-v0", gym.make("Hopper-v5"), ref_scores=(0, 4000))  # not taken
    result = run_entry("main.py", tmp_path / "run", "buffer.source=minari", "buffer.dataset=mujoco/hopper/medium-v0",
                       check=False, env={"MINARI_DATASETS_PATH": str(minari_root)})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "has no reference scores" in lines[0]
    assert "env.ref_min_score=" in lines[0] and "env.ref_max_score=" in lines[0]


def test_one_reference_score_alone_on_the_command_line_is_refused(tmp_path, minari_root):
    write_minari_dataset("mujoco/hopper/medium-v0", gym.make("Hopper-v5"))
    result = run_entry("main.py", tmp_path / "run", "buffer.source=minari", "buffer.dataset=mujoco/hopper/medium-v0",
                       "env.ref_max_score=500", check=False, env={"MINARI_DATASETS_PATH": str(minari_root)})
    assert result.returncode != 0
    assert result.stderr.strip().endswith("env.ref_max_score given alone: give env.ref_min_score and "
                                          "env.ref_max_score together"), result.stderr


def test_a_d4rl_run_with_reference_scores_on_the_command_line_records_their_source(tmp_path, hopper_file):
    run_entry("main.py", tmp_path / "run", f"buffer.path={hopper_file}", "seeds=[0]", "train.steps=5",
              "train.eval_every=5", "env.ref_min_score=0", "env.ref_max_score=100")
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").env.ref_source == "command-line"


def test_a_dataset_not_on_disk_names_the_command_that_fetches_it(tmp_path):
    result = run_entry("main.py", tmp_path / "run", "buffer.source=minari", "buffer.dataset=mujoco/hopper/medium-v0",
                       check=False, env={"MINARI_DATASETS_PATH": str(tmp_path / "empty")})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].endswith("fetch it with `minari download mujoco/hopper/medium-v0`")



@pytest.mark.parametrize("dataset_id", ["alice/hopper/mine-v0", "hopper-mine-v1"])
def test_a_users_own_dataset_in_any_namespace_trains_in_its_env(tmp_path, minari_root, dataset_id):
    write_minari_dataset(dataset_id, gym.make("Hopper-v5"), ref_scores=(-20, 3000))
    run_entry("main.py", tmp_path / "run", "buffer.source=minari", f"buffer.dataset={dataset_id}", "seeds=[0]",
              env={"MINARI_DATASETS_PATH": str(minari_root)})
    cfg = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert (cfg.buffer.dataset, cfg.env.id, cfg.env.ref_source) == (dataset_id, "Hopper-v5", "minari")
    assert (tmp_path / "run" / "seed0" / "final.json").is_file()


def test_a_users_dataset_of_another_robot_names_the_env_to_choose(tmp_path, minari_root):
    write_minari_dataset("alice/walker-v0", gym.make("Walker2d-v5"), ref_scores=(0, 4000))
    result = run_entry("main.py", tmp_path / "run", "buffer.source=minari", "buffer.dataset=alice/walker-v0",
                       "seeds=[0]", check=False, env={"MINARI_DATASETS_PATH": str(minari_root)})
    assert result.returncode != 0 and result.stderr.strip() == (
        "error: buffer.dataset=alice/walker-v0: recorded in Walker2d-v5, not hopper's env: choose the env= of its "
        "robot (hopper, halfcheetah, walker2d)")
