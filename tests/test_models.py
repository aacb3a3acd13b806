"""models.py: causality, normalization, the optimizer groups, and equality with the plain reference."""
import numpy as np
import pytest
import torch

from models import BitDropout, DecisionTransformer, DTConfig, ReferenceDT, reference_state_dict
from tools.bench import default_model_config, random_batch

STATE_DIM, ACT_DIM, K = 5, 2, 6


def tiny_model(**overrides):
    torch.manual_seed(0)
    config = DTConfig(**{**dict(state_dim=STATE_DIM, act_dim=ACT_DIM, context_len=K, max_timestep=100, embed_dim=32,
                                n_layers=2, n_heads=2, dropout=0.0), **overrides})
    return DecisionTransformer(config, state_mean=np.arange(STATE_DIM), state_std=np.full(STATE_DIM, 2.0),
                               action_low=np.array([-1.0, 0.0]), action_high=np.array([1.0, 4.0])).eval()


def tiny_inputs(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, STATE_DIM, generator=g), torch.rand(B, K, ACT_DIM, generator=g),
            torch.randn(B, K, 1, generator=g), torch.randint(0, 100, (B, K), generator=g))


def test_outputs_have_one_prediction_per_step():
    preds = tiny_model()(*tiny_inputs(), predict_next=True)
    assert {name: tuple(p.shape) for name, p in preds.items()} == {
        "action": (3, K, ACT_DIM), "next_state": (3, K, STATE_DIM), "next_return": (3, K, 1)}


@pytest.mark.parametrize("changed", ["states", "actions", "returns_to_go", "timesteps"])
def test_a_later_step_never_changes_an_earlier_prediction(changed):
    model = tiny_model()
    inputs = dict(zip(["states", "actions", "returns_to_go", "timesteps"], tiny_inputs()))
    before = model(**inputs, predict_next=True)
    t = 3
    altered = inputs[changed].clone()
    altered[:, t:] = altered[:, t:] + 7 if changed != "timesteps" else (altered[:, t:] + 7) % 100
    after = model(**{**inputs, changed: altered}, predict_next=True)
    torch.testing.assert_close(after["action"][:, :t], before["action"][:, :t])  # actions at steps < t
    torch.testing.assert_close(after["next_state"][:, :t], before["next_state"][:, :t])  # next states at steps < t
    if changed == "actions":  # a_t is read after s_t: the action prediction at t must not see it
        torch.testing.assert_close(after["action"][:, t], before["action"][:, t])
    assert not torch.allclose(after["action"][:, t + 1:], before["action"][:, t + 1:]), "later steps see the change"


def test_training_mode_attention_with_dropout_is_causal_too():
    model = tiny_model(dropout=0.1).train()
    states = tiny_inputs()[0].requires_grad_()
    _, actions, returns_to_go, timesteps = tiny_inputs()
    action_preds = model(states, actions, returns_to_go, timesteps)["action"]
    action_preds[:, 2].sum().backward()
    assert states.grad[:, 3:].abs().sum() == 0, "no gradient from steps after t"
    assert states.grad[:, 2].abs().sum() > 0


@pytest.mark.parametrize("changed", ["states", "returns_to_go"])
def test_the_action_at_t_reads_the_state_and_return_to_go_at_t(changed):
    model = tiny_model()
    inputs = dict(zip(["states", "actions", "returns_to_go", "timesteps"], tiny_inputs()))
    altered = inputs[changed].clone()
    altered[:, 3] += 1.0
    before, after = model(**inputs)["action"], model(**{**inputs, changed: altered})["action"]
    assert not torch.allclose(after[:, 3], before[:, 3])


def test_action_predictions_stay_inside_the_action_bounds():
    model = tiny_model()
    with torch.no_grad():
        model.predict_action.bias.fill_(50.0)  # saturate the tanh
    action_preds = model(*tiny_inputs())["action"]
    torch.testing.assert_close(action_preds, torch.tensor([1.0, 4.0]).expand_as(action_preds))


def test_action_normalization_round_trips():
    model = tiny_model()
    actions = torch.rand(10, ACT_DIM) * torch.tensor([2.0, 4.0]) + torch.tensor([-1.0, 0.0])
    normed = model.norm_action(actions)
    assert normed.min() >= -1 and normed.max() <= 1
    torch.testing.assert_close(model.unnorm_action(normed), actions)


def test_state_normalization_uses_the_dataset_statistics():
    model = tiny_model()
    states = torch.arange(STATE_DIM, dtype=torch.float32) + 2.0  # mean + 1 std
    torch.testing.assert_close(model.norm_state(states), torch.ones(STATE_DIM))


def test_weight_decay_applies_to_linear_weights_only():
    model = tiny_model()
    decay, no_decay = model.configure_optimizer(1e-4, 0.1).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and "ln" not in names[id(p)] for p in decay["params"])
    assert any("embed_timestep" in names[id(p)] for p in no_decay["params"])


@pytest.mark.parametrize("env_shape", [(11, 3), (17, 6)])
def test_fp32_outputs_equal_the_plain_reference(env_shape):
    torch.manual_seed(0)
    model = DecisionTransformer(default_model_config(*env_shape)).eval()
    reference = ReferenceDT(default_model_config(*env_shape)).load_project_weights(model).eval()
    states, actions, returns_to_go, timesteps, _ = random_batch(*env_shape, batch_size=8)
    with torch.no_grad():
        ours = model(states, actions, returns_to_go, timesteps, predict_next=True)
        theirs = reference(states, actions, returns_to_go, timesteps, predict_next=True)
    assert list(ours) == list(theirs) == ["action", "next_state", "next_return"]
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_action_predictions_skip_nothing_when_the_last_block_computes_only_state_tokens(n_heads):
    model = tiny_model(n_heads=n_heads)
    for k in (K, 1):  # a full context, and the first step of an episode
        inputs = [x[:, :k] for x in tiny_inputs()]
        with torch.no_grad():
            pruned = model(*inputs)
            full = model(*inputs, predict_next=True)["action"]
        torch.testing.assert_close(pruned["action"], full, rtol=1e-6, atol=1e-6)
        assert list(pruned) == ["action"]


def test_the_reference_starts_from_the_projects_initial_weights():
    torch.manual_seed(0)
    model = DecisionTransformer(default_model_config(11, 3))
    torch.manual_seed(0)
    reference = ReferenceDT(default_model_config(11, 3))
    theirs = reference.state_dict()
    for name, weight in reference_state_dict(model.state_dict()).items():
        torch.testing.assert_close(theirs[name], weight, rtol=0, atol=0, msg=name)


def test_fp32_gradients_equal_the_plain_reference_without_dropout():
    model = DecisionTransformer(default_model_config(11, 3, dropout=0.0))
    reference = ReferenceDT(default_model_config(11, 3, dropout=0.0)).load_project_weights(model)
    batch = random_batch(11, 3, batch_size=4)
    for m in (model, reference):
        m(*batch[:4])["action"].square().sum().backward()
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight.grad, reference.blocks[0].attn.in_proj_weight.grad,
                               rtol=1e-4, atol=1e-6)


def test_dropout_drops_the_configured_share_and_keeps_the_mean():
    torch.manual_seed(0)
    dropout = BitDropout(0.1).train()
    y = dropout(torch.ones(1000, 1000))
    assert abs((y == 0).float().mean().item() - 0.1) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.005
    assert torch.equal(dropout.eval()(torch.ones(3)), torch.ones(3))


class Oracle(torch.nn.Module):
    """A stand-in model whose predictions are given: the true next step where it is real, 99 elsewhere."""

    def __init__(self, state_preds, return_preds):
        super().__init__()
        self.state_preds, self.return_preds = state_preds, return_preds

    def norm_state(self, states):
        return states / 2.0

    def forward(self, states, actions, returns_to_go, timesteps, predict_next=False):
        assert predict_next, "the auxiliary losses ask for the a_t tokens"
        return {"action": actions, "next_state": self.state_preds, "next_return": self.return_preds}


def test_the_auxiliary_targets_are_the_next_step_shifted_by_one_and_masked_past_the_end():
    from omegaconf import OmegaConf

    import core
    B, T = 2, 5
    states, returns_to_go = torch.randn(B, T, 3), torch.randn(B, T, 1)
    mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])  # the first trajectory ends at step 2
    state_preds, return_preds = torch.full((B, T, 3), 99.0), torch.full((B, T, 1), 99.0)
    for b, last in ((0, 2), (1, 4)):  # step t predicts step t + 1, for every t whose t + 1 is real
        state_preds[b, :last], return_preds[b, :last] = states[b, 1:last + 1] / 2.0, returns_to_go[b, 1:last + 1]
    batch = (states, torch.rand(B, T, 2), returns_to_go, torch.zeros(B, T, dtype=torch.long), mask)
    train_cfg = OmegaConf.create({"aux_state_coef": 0.5, "aux_rtg_coef": 2.0})
    named = core.losses(Oracle(state_preds, return_preds), batch, train_cfg, "fp32")
    assert named == {"loss": 0, "action_mse": 0, "state_mse": 0, "rtg_mse": 0}
    return_preds[0, 1] += 1.0  # a real next step (step 2) predicted wrong: one of the 6 counted steps
    assert core.losses(Oracle(state_preds, return_preds), batch, train_cfg, "fp32")["rtg_mse"] == pytest.approx(1 / 6)


def test_without_return_conditioning_the_policy_ignores_the_return_to_go_also_when_reloaded():
    from models import policy_checkpoint, policy_from_checkpoint
    states, actions, returns_to_go, timesteps = tiny_inputs()
    other_returns = returns_to_go + 3.0
    conditioned = tiny_model()
    assert not torch.allclose(conditioned(states, actions, returns_to_go, timesteps)["action"],
                              conditioned(states, actions, other_returns, timesteps)["action"])
    behaviour_cloning = policy_from_checkpoint(policy_checkpoint(tiny_model(condition_on_return=False),
                                                                 "models.DecisionTransformer", "Hopper-v4"))
    assert behaviour_cloning.config.condition_on_return is False
    assert torch.equal(behaviour_cloning(states, actions, returns_to_go, timesteps)["action"],
                       behaviour_cloning(states, actions, other_returns, timesteps)["action"])
