"""core.evaluate: the vectorized eval against the single-env eval on the real gymnasium env."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core import evaluate, rollout
from models import DecisionTransformer, DTConfig

MAKE = gym.make  # before any test replaces it


def fixed_policy(env_id):
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    config = DTConfig(obs_dim, act_dim, context_len=4, embed_dim=16, n_layers=1, n_heads=1, dropout=0.0)
    return DecisionTransformer(config, action_low=env.action_space.low, action_high=env.action_space.high).eval()


def eval_cfg(env_id):
    return OmegaConf.create({"env": {"id": env_id, "ref_min_score": -20.272305, "ref_max_score": 3234.3,
                                     "max_episode_len": 1000},
                             "eval": {"target_return": 3600}, "buffer": {"reward_scale": 1000}})


def test_vectorized_eval_equals_episodes_one_after_another():
    model, cfg = fixed_policy("Hopper-v4"), eval_cfg("Hopper-v4")
    vectorized = evaluate(model, cfg, episodes=4, seed=7, vectorized=True)
    sequential = evaluate(model, cfg, episodes=4, seed=7, vectorized=False)
    for key in vectorized:
        np.testing.assert_allclose(vectorized[key], sequential[key], rtol=1e-4)


def test_reward_counts_only_until_each_env_is_done():
    model = fixed_policy("Hopper-v4")
    returns, _ = rollout(model, "Hopper-v4", num_envs=3, seed=0, target_return=3600, reward_scale=1000)
    for i, episode_return in enumerate(returns):  # replay each episode alone with the same actions
        single, _ = rollout(model, "Hopper-v4", num_envs=1, seed=i, target_return=3600, reward_scale=1000)
        assert episode_return == pytest.approx(single[0], rel=1e-4)


def test_normalized_score_uses_d4rl_reference_returns():
    model, cfg = fixed_policy("Hopper-v4"), eval_cfg("Hopper-v4")
    result = evaluate(model, cfg, episodes=2, seed=0)
    expected = 100 * (result["return_mean"] - -20.272305) / (3234.3 - -20.272305)
    assert result["score_mean"] == pytest.approx(expected)


@pytest.fixture
def small_frames(monkeypatch):
    """Rendering envs film 96 x 96 frames: what is filmed is tested, not the resolution."""
    def make(*args, **kw):
        return MAKE(*args, **kw, width=96, height=96) if "render_mode" in kw else MAKE(*args, **kw)
    monkeypatch.setattr(gym, "make", make)


def test_video_shows_the_filmed_env_until_its_episode_ends(small_frames):
    model = fixed_policy("Hopper-v4")
    _, alone = rollout(model, "Hopper-v4", 1, 0, 3600, 1000, record=[0])
    _, beside_others = rollout(model, "Hopper-v4", 3, 0, 3600, 1000, record=[0])
    alone, beside_others = alone[0], beside_others[0]
    assert 1 < len(alone) < 1000, "this policy falls: the video stops with the episode"
    assert len(beside_others) == len(alone) and alone[0].ndim == 3 and alone[0].shape[2] == 3
    np.testing.assert_array_equal(beside_others[-1], alone[-1])


def robot_share(frame):
    """The share of the frame's middle that shows the robot: its orange-brown geoms (floor and sky are not)."""
    h, w, _ = frame.shape
    middle = frame[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(int)
    r, g, b = middle[..., 0], middle[..., 1], middle[..., 2]
    return ((r > 100) & (r - b > 60) & (r > g)).mean()


class Gait(torch.nn.Module):
    """A stand-in policy for rollout: a fixed rhythm of torques by timestep, which runs HalfCheetah backwards."""

    def __init__(self):
        super().__init__()
        self.state_dim, self.act_dim, self.context_len = 17, 6, 1
        self.register_buffer("state_mean", torch.zeros(17))
        self.embed_timestep = torch.nn.Embedding(1000, 1)

    @staticmethod
    def torques(timesteps):
        return torch.sin(0.8 * timesteps[..., None].float() + torch.tensor([0.0, 1.5, 3.0, 0.0, 1.5, 3.0]))

    def forward(self, states, actions, returns_to_go, timesteps):
        return self.torques(timesteps), None, None  # (n, k, 6)


def test_the_tracking_camera_keeps_a_running_robot_in_view_where_the_default_camera_loses_it(small_frames):
    returns, frames = rollout(Gait(), "HalfCheetah-v4", 1, 0, 6000, 1000, record=[0], max_steps=150)
    tracked = np.array([robot_share(f) for f in frames[0]])  # filmed by rollout's camera
    assert returns[0] < -150, "the gait ran several metres (backwards)"
    assert len(tracked) == 150 and tracked.min() > 0.01, f"robot out of view in {np.sum(tracked <= 0.01)} frames"

    env = gym.make("HalfCheetah-v4", render_mode="rgb_array")  # the default camera
    env.reset(seed=0)
    assert robot_share(env.render()) > 0.01, "the default camera starts on the robot"
    for t in range(150):  # the same gait, filmed at its start and its end only
        env.step(Gait.torques(torch.tensor(t)).numpy())
    assert robot_share(env.render()) <= 0.01, "without tracking the robot leaves the picture"
    env.close()


@pytest.mark.parametrize("episodes", [1, 2])
def test_one_pass_over_several_targets_equals_a_pass_per_target(episodes):
    model, targets = fixed_policy("Hopper-v4"), np.array([500.0, 3600.0])
    together, _ = rollout(model, "Hopper-v4", 2 * episodes, 7, np.repeat(targets, episodes), 1000)
    for i, target in enumerate(targets):
        alone, _ = rollout(model, "Hopper-v4", episodes, 7 + i * episodes, target, 1000)
        np.testing.assert_allclose(together[i * episodes:(i + 1) * episodes], alone, rtol=1e-5)
