"""export.py and evaluate.py export=true: a policy as one .pt2 file, equal to the checkpoint's policy; and
evaluate.py on a copied run whose dataset is not here."""
import io
import json

import gymnasium as gym
import pytest
import torch
from omegaconf import OmegaConf

import core
import utils
from conftest import copy_run, run_script
from models import DecisionTransformer, DTConfig
from tools import export

K, OBS, ACT, REWARD_SCALE, MAX_TIMESTEP = 5, 11, 3, 1000.0, 100


def random_policy():
    """A small untrained DT with non-trivial state statistics and asymmetric action bounds."""
    torch.manual_seed(0)
    config = DTConfig(OBS, ACT, context_len=K, max_timestep=MAX_TIMESTEP, embed_dim=16, n_layers=2, n_heads=2)
    return DecisionTransformer(config, state_mean=torch.randn(OBS), state_std=torch.rand(OBS) + 0.5,
                               action_low=-0.4 * torch.ones(ACT), action_high=torch.ones(ACT)).eval()


def facts(model):
    """What the file of `model` carries, as of a hopper run (export.run_facts)."""
    cfg = OmegaConf.create({"env": {"id": "Hopper-v4", "ref_min_score": -20.0, "ref_max_score": 3000.0},
                            "eval": {"target_return": 3600.0}, "buffer": {"reward_scale": REWARD_SCALE}})
    return export.run_facts(model, cfg)


def random_windows(real_steps, seed=1):
    """Windows of K steps, raw, whose last real_steps[i] steps are real in row i (the rest is padding noise)."""
    g = torch.Generator().manual_seed(seed)
    B = len(real_steps)
    mask = (torch.arange(K)[None] >= K - torch.tensor(real_steps)[:, None]).float()  # (B, K)
    return (torch.randn(B, K, OBS, generator=g), torch.rand(B, K, ACT, generator=g) * 1.4 - 0.4,
            torch.randn(B, K, 1, generator=g) * 1000, torch.randint(0, 2 * MAX_TIMESTEP, (B, K), generator=g), mask)


def load(data):
    """The exported program as a module, and the facts it carries."""
    extra = {"metadata.json": ""}
    program = torch.export.load(io.BytesIO(data), extra_files=extra)
    return program.module(), json.loads(extra["metadata.json"])


def test_an_exported_policy_acts_as_the_pytorch_policy_on_the_real_steps_of_left_padded_windows():
    model, real_steps = random_policy(), [1, 2, 3, 4, 5, 5]
    states, actions, returns_to_go, timesteps, mask = inputs = random_windows(real_steps)
    with torch.no_grad():  # the model on each row's real steps alone, as core.rollout calls it
        expected = torch.stack([model(states[i:i + 1, K - n:], actions[i:i + 1, K - n:],
                                      returns_to_go[i:i + 1, K - n:] / REWARD_SCALE,
                                      timesteps[i:i + 1, K - n:].clamp(max=MAX_TIMESTEP - 1))["action"][0, -1]
                                for i, n in enumerate(real_steps)])  # (B, act)
    policy, _ = load(export.export_policy(model, facts(model)))
    assert policy(*inputs).shape == (len(real_steps), ACT)
    assert (policy(*inputs) - expected).abs().max() <= 1e-5
    assert (policy(*(x[:1] for x in inputs)) - expected[:1]).abs().max() <= 1e-5  # any batch size, 1 too
    assert (expected[0] - expected[1]).abs().max() > 1e-3, "the rows differ: the comparison is not vacuous"


def test_an_exported_file_carries_its_env_target_context_normalization_bounds_scores_and_reward_scale():
    model = random_policy()
    _, carried = load(export.export_policy(model, facts(model)))
    assert carried == json.loads(json.dumps(facts(model)))
    assert carried["context_len"] == K and carried["state_mean"] == pytest.approx(model.state_mean.tolist())
    assert {"env_id", "target_return", "state_std", "action_low", "action_high", "ref_min_score", "ref_max_score",
            "reward_scale"} <= set(carried)


def test_evaluate_py_exports_each_seed_and_the_file_drives_an_episode_as_the_checkpoint(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "export=true", check=True)
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("seed*/*.pt2")) == [
        "seed0/final.pt2", "seed1/final.pt2"]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = core.load_policy(run_dir / "seed0" / "final.pt")
    expected = core.rollout(model, core.RolloutSpec.of_run(cfg, 1, 7)).returns

    policy, facts = load((run_dir / "seed0" / "final.pt2").read_bytes())  # the loop of docs/export.md
    assert (facts["target_return"], facts["env_id"]) == (cfg.eval.target_return, cfg.env.id)
    K = facts["context_len"]
    window = {"states": torch.zeros(1, K, len(facts["state_mean"])),
              "actions": torch.zeros(1, K, len(facts["action_low"])), "returns_to_go": torch.zeros(1, K, 1),
              "timesteps": torch.zeros(1, K, dtype=torch.long), "mask": torch.zeros(1, K)}
    env = gym.make(facts["env_id"], max_episode_steps=cfg.env.max_episode_len)
    (obs, _), return_to_go, t, done, total = env.reset(seed=7), facts["target_return"], 0, False, 0.0
    while not done:
        for name, value in zip(window, (torch.as_tensor(obs), 0.0, return_to_go, t, 1.0)):
            window[name] = window[name].roll(-1, dims=1)  # the window moves one step on
            window[name][0, -1] = value
        action = policy(*window.values())[0]  # (act,)
        window["actions"][0, -1] = action
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        return_to_go, t, total, done = return_to_go - reward, t + 1, total + reward, terminated or truncated
    assert total == pytest.approx(expected[0], rel=1e-4)


def test_evaluate_py_on_a_copied_run_without_its_dataset_evaluates_and_says_so(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    config = OmegaConf.load(run_dir / "config.yaml")
    config.buffer.path = config.buffer.file = str(tmp_path / "elsewhere" / "hopper_medium-v2.hdf5")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    result = run_script("evaluate.py", f"run={run_dir}", "targets=[1000]", "episodes=1", check=True,
                        env={"D4RL_DATASET_DIR": str(tmp_path / "no-datasets")})  # nor where the user keeps them
    said = [line for line in (result.stdout + result.stderr).splitlines() if "is not here" in line]
    assert len(said) == 1 and "evaluating without it; the figure leaves out the data's range" in said[0]
    assert len(utils.read_csv(run_dir / "sweep_final.csv")["score"]) == 2  # seeds 0 and 1, one episode each
    assert (run_dir / "sweep_final.png").exists()
