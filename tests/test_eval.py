"""core.evaluate: the vectorized eval against the single-env eval on the real gymnasium env."""
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import ROOT
from core import RolloutSpec, evaluate, rollout
from models import DecisionTransformer, DTConfig


def fixed_policy(env_id):
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    config = DTConfig(obs_dim, act_dim, context_len=4, embed_dim=16, n_layers=1, n_heads=1, dropout=0.0)
    return DecisionTransformer(config, action_low=env.action_space.low, action_high=env.action_space.high).eval()


HOPPER_REFS = (-20.272305, 3234.3)  # D4RL's hopper reference returns


def episodes(num_envs, seed=0, targets=3600.0, **kw):
    """Hopper-v4 episodes conditioned on targets (reward scale 1000)."""
    return RolloutSpec("Hopper-v4", num_envs, seed, targets, 1000, **kw)


def test_vectorized_eval_equals_episodes_one_after_another():
    model = fixed_policy("Hopper-v4")
    together = rollout(model, episodes(4, seed=7)).returns  # (4,) in lockstep
    alone = [rollout(model, episodes(1, seed=7 + i)).returns[0] for i in range(4)]  # each in an env of its own
    np.testing.assert_allclose(together, alone, rtol=1e-4)
    assert np.ptp(together) > 0, "the episodes differ: the comparison is not vacuous"


def test_reward_counts_only_until_each_env_is_done():
    model = fixed_policy("Hopper-v4")
    returns = rollout(model, episodes(3)).returns
    for i, episode_return in enumerate(returns):  # replay each episode alone with the same actions
        single = rollout(model, episodes(1, seed=i)).returns
        assert episode_return == pytest.approx(single[0], rel=1e-4)


def test_normalized_score_uses_d4rl_reference_returns():
    model = fixed_policy("Hopper-v4")
    result = evaluate(model, episodes(2), HOPPER_REFS)
    expected = 100 * (result["return_mean"] - -20.272305) / (3234.3 - -20.272305)
    assert result["score_mean"] == pytest.approx(expected)


def test_video_shows_the_filmed_env_until_its_episode_ends(small_frames):
    model = fixed_policy("Hopper-v4")
    alone = rollout(model, episodes(1, record=(0,))).frames
    beside_others = rollout(model, episodes(3, record=(0,))).frames
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
        self.device, self.last_timestep = torch.device("cpu"), 999

    @staticmethod
    def torques(timesteps):
        return torch.sin(0.8 * timesteps[..., None].float() + torch.tensor([0.0, 1.5, 3.0, 0.0, 1.5, 3.0]))

    def forward(self, states, actions, returns_to_go, timesteps):
        return {"action": self.torques(timesteps)}  # (n, k, 6)


def test_the_tracking_camera_keeps_a_running_robot_in_view_where_the_default_camera_loses_it(small_frames):
    returns, lengths, frames = rollout(Gait(), RolloutSpec("HalfCheetah-v4", 1, 0, 6000, 1000, time_limit=150,
                                                           record=(0,)))
    tracked = np.array([robot_share(f) for f in frames[0]])  # filmed by rollout's camera
    assert returns[0] < -150, "the gait ran several metres (backwards)"
    assert lengths[0] == 150, "the episode ran to its time limit"
    assert len(tracked) == 150 and tracked.min() > 0.01, f"robot out of view in {np.sum(tracked <= 0.01)} frames"

    env = gym.make("HalfCheetah-v4", render_mode="rgb_array")  # the default camera
    env.reset(seed=0)
    assert robot_share(env.render()) > 0.01, "the default camera starts on the robot"
    for t in range(150):  # the same gait, filmed at its start and its end only
        env.step(Gait.torques(torch.tensor(t)).numpy())
    assert robot_share(env.render()) <= 0.01, "without tracking the robot leaves the picture"
    env.close()


@pytest.mark.parametrize("per_target", [1, 2])
def test_one_pass_over_several_targets_equals_a_pass_per_target(per_target):
    model, targets = fixed_policy("Hopper-v4"), np.array([500.0, 3600.0])
    together = rollout(model, RolloutSpec("Hopper-v4", 2 * per_target, 7, np.repeat(targets, per_target), 1000)).returns
    for i, target in enumerate(targets):
        alone = rollout(model, RolloutSpec("Hopper-v4", per_target, 7 + i * per_target, target, 1000)).returns
        np.testing.assert_allclose(together[i * per_target:(i + 1) * per_target], alone, rtol=1e-5)


class Still(torch.nn.Module):
    """A stand-in policy for rollout: zero torques; it keeps the return-to-go window of every call it gets."""

    def __init__(self, state_dim, act_dim, context_len):
        super().__init__()
        self.state_dim, self.act_dim, self.context_len = state_dim, act_dim, context_len
        self.device, self.last_timestep = torch.device("cpu"), 999
        self.windows = []  # one (n, k) array per step

    def forward(self, states, actions, returns_to_go, timesteps):
        self.windows.append(returns_to_go[..., 0].numpy().copy())
        return {"action": torch.zeros(*states.shape[:2], self.act_dim)}  # (n, k, act)


def test_an_episode_that_falls_is_as_long_as_the_env_kept_it_alone():
    played = rollout(Still(11, 3, 4), RolloutSpec("Hopper-v4", 2, 5, 3600.0, 1000.0))
    env = gym.make("Hopper-v4")
    for i in range(2):
        env.reset(seed=5 + i)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(np.zeros(3))
            steps, done = steps + 1, terminated or truncated
        assert played.lengths[i] == steps < 1000, "a fall ends the episode before its time limit"


def test_each_env_is_conditioned_on_its_target_lowered_by_its_own_rewards():
    targets, scale, steps, K = np.array([100.0, 2000.0, 3600.0]), 1000.0, 12, 4
    model = Still(11, 3, K)
    returns = rollout(model, RolloutSpec("Hopper-v4", 3, 5, targets, scale, time_limit=steps)).returns
    env = gym.make("Hopper-v4")
    for i, target in enumerate(targets):  # the same episode again, alone: its rewards
        env.reset(seed=5 + i)
        rewards = np.array([env.step(np.zeros(3))[1] for _ in range(steps)])
        expected = (target - np.concatenate(([0.0], np.cumsum(rewards)[:-1]))) / scale  # (steps,) g_t
        seen = np.array([window[i, -1] for window in model.windows])  # (steps,) each step's own g_t
        np.testing.assert_allclose(seen, expected, rtol=1e-5)
        np.testing.assert_allclose(model.windows[-1][i], expected[-K:], rtol=1e-5)  # the window: the last K
        assert returns[i] == pytest.approx(rewards.sum())


def test_mujocos_log_of_an_unstable_simulation_lands_outside_the_project():
    env = gym.make("Hopper-v4")
    env.reset(seed=0)
    env.unwrapped.data.qvel[:] = 1e12  # MuJoCo warns, and writes MUJOCO_LOG.TXT into the working folder
    env.step(np.zeros(3))
    assert (Path.cwd() / "MUJOCO_LOG.TXT").is_file()
    assert Path.cwd() != ROOT and ROOT not in Path.cwd().parents
