"""export.py and evaluate.py export=true: a policy as one ONNX file, equal to the checkpoint's policy, driving an
episode without torch; and evaluate.py on a copied run whose dataset is not here."""
import json
import subprocess
import sys

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


@pytest.fixture
def exporter():
    """Skip where the optional export tools are not installed (requirements-extra.txt; CI installs them)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module)


def run_file(data, inputs):
    """The exported file's actions (B, act) for these inputs, through onnxruntime."""
    import onnxruntime
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.numpy() for name, x in zip(export.INPUTS, inputs)})[0]


def test_an_exported_policy_acts_as_the_pytorch_policy_on_the_real_steps_of_left_padded_windows(exporter):
    model, real_steps = random_policy(), [1, 2, 3, 4, 5, 5]
    states, actions, returns_to_go, timesteps, mask = inputs = random_windows(real_steps)
    with torch.no_grad():  # the model on each row's real steps alone, as core.rollout calls it
        expected = torch.stack([model(states[i:i + 1, K - n:], actions[i:i + 1, K - n:],
                                      returns_to_go[i:i + 1, K - n:] / REWARD_SCALE,
                                      timesteps[i:i + 1, K - n:].clamp(max=MAX_TIMESTEP - 1))["action"][0, -1]
                                for i, n in enumerate(real_steps)]).numpy()  # (B, act)
    data = export.export_policy(model, facts(model))
    assert run_file(data, inputs).shape == (len(real_steps), ACT)
    assert np.abs(run_file(data, inputs) - expected).max() <= 1e-5
    assert np.abs(run_file(data, [x[:1] for x in inputs]) - expected[:1]).max() <= 1e-5  # any batch size, 1 too
    assert np.abs(expected[0] - expected[1]).max() > 1e-3, "the rows differ: the comparison is not vacuous"


def test_an_exported_file_carries_its_env_target_context_normalization_bounds_scores_and_reward_scale(exporter):
    import onnx
    model = random_policy()
    proto = onnx.load_from_string(export.export_policy(model, facts(model)))
    carried = {prop.key: json.loads(prop.value) for prop in proto.metadata_props}
    assert carried == json.loads(json.dumps(facts(model)))
    assert carried["context_len"] == K and carried["state_mean"] == pytest.approx(model.state_mean.tolist())
    assert {"env_id", "target_return", "state_std", "action_low", "action_high", "ref_min_score", "ref_max_score",
            "reward_scale"} <= set(carried)


def test_export_without_onnx_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript fails
    with pytest.raises(ImportError, match=r"export=true needs onnx and onnxscript: pip install -r requirements-extra"):
        export.export_policy(random_policy(), {"reward_scale": REWARD_SCALE})


DOCS_LOOP = """
import json, sys
class NoTorch:  # `import torch` fails, as where torch is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
import gymnasium as gym
import numpy as np
import onnxruntime

session = onnxruntime.InferenceSession(sys.argv[1])  # from here on, the loop of docs/export.md
facts = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
K = facts["context_len"]
window = {"states": np.zeros((1, K, len(facts["state_mean"])), np.float32),
          "actions": np.zeros((1, K, len(facts["action_low"])), np.float32),
          "returns_to_go": np.zeros((1, K, 1), np.float32), "timesteps": np.zeros((1, K), np.int64),
          "mask": np.zeros((1, K), np.float32)}
env = gym.make(facts["env_id"], max_episode_steps=int(sys.argv[2]))
(obs, _), return_to_go, t, done, total = env.reset(seed=7), facts["target_return"], 0, False, 0.0
while not done:
    for name, value in zip(window, (obs, 0.0, return_to_go, t, 1.0)):
        window[name] = np.roll(window[name], -1, axis=1)
        window[name][0, -1] = value
    action = session.run(None, window)[0][0]
    window["actions"][0, -1] = action
    obs, reward, terminated, truncated, _ = env.step(action)
    return_to_go, t, total, done = return_to_go - reward, t + 1, total + reward, terminated or truncated
print(json.dumps({"total": float(total), "facts": facts, "torch": "torch" in sys.modules}))
"""


def test_evaluate_py_exports_each_seed_and_the_file_drives_an_episode_without_torch_as_the_checkpoint(
        exporter, tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "export=true", check=True)
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("seed*/*.onnx")) == [
        "seed0/final.onnx", "seed1/final.onnx"]
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = core.load_policy(run_dir / "seed0" / "final.pt")
    expected = core.rollout(model, core.RolloutSpec.of_run(cfg, 1, 7)).returns
    result = subprocess.run([sys.executable, "-c", DOCS_LOOP, str(run_dir / "seed0" / "final.onnx"),
                             str(cfg.env.max_episode_len)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout)
    assert not ran["torch"] and (ran["facts"]["target_return"], ran["facts"]["env_id"]) == (
        cfg.eval.target_return, cfg.env.id)
    assert ran["total"] == pytest.approx(expected[0], rel=1e-4)


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
