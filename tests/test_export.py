"""export.py and evaluate.py export=: a policy as one ONNX or TorchScript file, equal to the checkpoint's policy;
and evaluate.py on a copied run whose dataset is not here."""
import io
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import core
import utils
from conftest import ROOT, copy_run, run_script
from models import DecisionTransformer, DTConfig
from tools import export
from tools.onnx_policy import OnnxPolicy

K, OBS, ACT, REWARD_SCALE, MAX_TIMESTEP = 5, 11, 3, 1000.0, 100


def random_policy():
    """A small untrained DT with non-trivial state statistics and asymmetric action bounds."""
    torch.manual_seed(0)
    config = DTConfig(OBS, ACT, context_len=K, max_timestep=MAX_TIMESTEP, embed_dim=16, n_layers=2, n_heads=2)
    return DecisionTransformer(config, state_mean=torch.randn(OBS), state_std=torch.rand(OBS) + 0.5,
                               action_low=-0.4 * torch.ones(ACT), action_high=torch.ones(ACT)).eval()


def facts(model):
    """What the file of `model` carries, as of a hopper run (export.run_facts)."""
    cfg = OmegaConf.create({"env": {"id": "Hopper-v4", "kwargs": None, "ref_min_score": -20.0, "ref_max_score": 3000.0},
                            "eval": {"target_return": 3600.0}, "buffer": {"reward_scale": REWARD_SCALE}})
    return export.run_facts(model, cfg)


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
                                      timesteps[i:i + 1, K - n:].clamp(max=MAX_TIMESTEP - 1))["action"][0, -1]
                                for i, n in enumerate(real_steps)]).numpy()  # (B, act)
    actions_out = run_exported(export.export_policy(model, facts(model), fmt), fmt, inputs)
    assert actions_out.shape == (len(real_steps), ACT)
    assert np.abs(actions_out - expected).max() <= 1e-5
    assert np.abs(expected[0] - expected[1]).max() > 1e-3, "the rows differ: the comparison is not vacuous"


def test_export_without_onnx_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(ImportError, match=r"export=onnx needs onnx: pip install -r requirements-extra.txt"):
        export.export_policy(random_policy(), {"reward_scale": REWARD_SCALE}, "onnx")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_file_carries_its_env_target_context_normalization_bounds_scores_and_reward_scale(fmt, tmp_path):
    pytest.importorskip("onnx")
    model = random_policy()
    data = export.export_policy(model, facts(model), fmt)
    if fmt == "torchscript":
        extra = {"metadata.json": ""}
        torch.jit.load(io.BytesIO(data), _extra_files=extra)
        carried = json.loads(extra["metadata.json"])
    else:
        import onnx
        carried = {p.key: json.loads(p.value) for p in onnx.load_from_string(data).metadata_props}
    assert carried == json.loads(json.dumps(facts(model)))
    assert carried["context_len"] == K and carried["state_mean"] == pytest.approx(model.state_mean.tolist())
    assert {"env_id", "target_return", "state_std", "action_low", "action_high", "ref_min_score", "ref_max_score",
            "reward_scale"} <= set(carried)


NO_TORCH = """
import json, sys
import numpy as np
class NoTorch:  # `import torch` fails, as where torch is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
from tools.onnx_policy import OnnxPolicy
policy = OnnxPolicy(sys.argv[1])
action = policy.act(np.zeros(policy.obs_dim, np.float32))
print(json.dumps({"metadata": policy.metadata, "target_return": policy.target_return, "action": action.tolist(),
                  "score": policy.normalized_score(1490.0), "torch": "torch" in sys.modules}))
"""


def test_an_onnx_policy_runs_where_torch_is_not_installed_and_reads_the_files_metadata(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model, path = random_policy(), tmp_path / "policy.onnx"
    path.write_bytes(export.export_policy(model, facts(model), "onnx"))
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout)
    expected = OnnxPolicy(path).act(np.zeros(OBS, np.float32))
    assert not ran["torch"] and ran["action"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert ran["metadata"]["env_id"] == "Hopper-v4" and ran["target_return"] == 3600.0
    assert ran["score"] == pytest.approx(50.0)  # halfway between the reference scores -20 and 3000


def test_evaluate_py_exports_each_seed_and_the_onnx_file_drives_an_episode_as_the_checkpoint(tiny_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "export=onnx", check=True)
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("seed*/*.onnx")) == [
        "seed0/final.onnx", "seed1/final.onnx"]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = core.load_policy(run_dir / "seed0" / "final.pt")
    expected = core.rollout(model, core.RolloutSpec.of_run(cfg, 1, 7)).returns

    policy = OnnxPolicy(run_dir / "seed0" / "final.onnx")  # the run's target return, from the file
    assert (policy.target_return, policy.metadata["env_id"]) == (cfg.eval.target_return, cfg.env.id)
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
    result = run_script("evaluate.py", f"run={run_dir}", "targets=[1000]", "episodes=1", check=True,
                        env={"D4RL_DATASET_DIR": str(tmp_path / "no-datasets")})  # nor where the user keeps them
    said = [line for line in (result.stdout + result.stderr).splitlines() if "is not here" in line]
    assert len(said) == 1 and "evaluating without it; the figure leaves out the data's range" in said[0]
    assert len(utils.read_csv(run_dir / "sweep_final.csv")["score"]) == 2  # seeds 0 and 1, one episode each
    assert (run_dir / "sweep_final.png").exists()
