"""core.evaluate: the vectorized eval against the single-env eval on the real gymnasium env."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core import evaluate, rollout
from models import DecisionTransformer, DTConfig


def fixed_policy(env_id):
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    config = DTConfig(obs_dim, act_dim, context_len=4, embed_dim=16, n_layers=1, n_heads=1, dropout=0.0)
    return DecisionTransformer(config, action_low=env.action_space.low, action_high=env.action_space.high).eval()


def eval_cfg(env_id):
    return OmegaConf.create({"env": {"id": env_id, "ref_min_score": -20.272305, "ref_max_score": 3234.3},
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


def test_video_shows_the_first_env_until_its_episode_ends():
    model = fixed_policy("Hopper-v4")
    _, alone = rollout(model, "Hopper-v4", 1, 0, 3600, 1000, record_video=True)
    _, beside_others = rollout(model, "Hopper-v4", 3, 0, 3600, 1000, record_video=True)
    assert 1 < len(alone) < 1000, "this policy falls: the video stops with the episode"
    assert len(beside_others) == len(alone) and alone[0].ndim == 3 and alone[0].shape[2] == 3
    np.testing.assert_array_equal(beside_others[-1], alone[-1])
