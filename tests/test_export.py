"""export.py and evaluate.py export=: a policy as one ONNX or TorchScript file, equal to the checkpoint's policy;
and evaluate.py on a copied run whose dataset is not here."""
import io
import sys

import gymnasium as gym
import numpy as np
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


def random_windows(real_steps, seed=1):
    """Windows of K steps, raw, whose last real_steps[i] steps are real in row i (the rest is padding noise)."""
    g = torch.Generator().manual_seed(seed)
    B = len(real_steps)
    mask = (torch.arange(K)[None] >= K - torch.tensor(real_steps)[:, None]).float()  # (B, K)
    return (torch.randn(B, K, OBS, generator=g), torch.rand(B, K, ACT, generator=g) * 1.4 - 0.4,
            torch.randn(B, K, 1, generator=g) * 1000, torch.randint(0, 2 * MAX_TIMESTEP, (B, K), generator=g), mask)


def run_exported(data, fmt, inputs):
    """The exported file's actions (B, act) for these inputs, through onnxruntime or torch.jit."""
    if fmt == "torchscript":
        return torch.jit.load(io.BytesIO(data))(*inputs).numpy()
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.numpy() for name, x in zip(export.INPUTS, inputs)})[0]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_policy_acts_as_the_pytorch_policy_on_the_real_steps_of_left_padded_windows(fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    model, real_steps = random_policy(), [1, 2, 3, 4, 5, 5]
    states, actions, returns_to_go, timesteps, mask = inputs = random_windows(real_steps)
    with torch.no_grad():  # the model on each row's real steps alone, as core.rollout calls it
        expected = torch.stack([model(states[i:i + 1, K - n:], actions[i:i + 1, K - n:],
                                      returns_to_go[i:i + 1, K - n:] / REWARD_SCALE,
                                      timesteps[i:i + 1, K - n:].clamp(max=MAX_TIMESTEP - 1))[0][0, -1]
                                for i, n in enumerate(real_steps)]).numpy()  # (B, act)
    actions_out = run_exported(export.export_policy(model, REWARD_SCALE, fmt), fmt, inputs)
    assert actions_out.shape == (len(real_steps), ACT)
    assert np.abs(actions_out - expected).max() <= 1e-5
    assert np.abs(expected[0] - expected[1]).max() > 1e-3, "the rows differ: the comparison is not vacuous"


def test_export_without_onnx_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(ImportError, match=r"export=onnx needs onnx: pip install -r requirements-extra.txt"):
        export.export_policy(random_policy(), REWARD_SCALE, "onnx")


def test_evaluate_py_exports_each_seed_and_the_onnx_file_drives_an_episode_as_the_checkpoint(tiny_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "export=onnx", check=True)
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("seed*/*.onnx")) == [
        "seed0/final.onnx", "seed1/final.onnx"]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = core.load_policy(run_dir / "seed0" / "final.pt")
    expected, _ = core.rollout(model, core.RolloutSpec.of_run(cfg, 1, 7))

    policy = export.OnnxPolicy(run_dir / "seed0" / "final.onnx", target_return=cfg.eval.target_return)
    env = gym.make(cfg.env.id, max_episode_steps=cfg.env.max_episode_len)
    (obs, _), reward, done, total = env.reset(seed=7), 0.0, False, 0.0
    while not done:  # the loop of docs/export.md
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs, reward))
        total, done = total + reward, terminated or truncated
    assert total == pytest.approx(expected[0], rel=1e-4)


def test_evaluate_py_on_a_copied_run_without_its_dataset_evaluates_and_says_so(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    config = OmegaConf.load(run_dir / "config.yaml")
    config.buffer.path = config.buffer.file = str(tmp_path / "elsewhere" / "hopper_medium-v2.hdf5")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    result = run_script("evaluate.py", f"run={run_dir}", "targets=[1000]", "episodes=1", check=True)
    said = [line for line in (result.stdout + result.stderr).splitlines() if "is not here" in line]
    assert len(said) == 1 and "evaluating without it; the figure leaves out the data's range" in said[0]
    assert len(utils.read_csv(run_dir / "sweep_final.csv")["score"]) == 2  # seeds 0 and 1, one episode each
    assert (run_dir / "sweep_final.png").exists()
