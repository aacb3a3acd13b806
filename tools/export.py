"""A trained policy as one ONNX file that runs without this project, without torch and outside Python (onnxruntime
in C++, Rust, JavaScript, ...).

    python evaluate.py run=runs/<date>/<time> export=true          # seed<N>/final.onnx of each seed

The file takes the episode's last K raw steps, left-padded (INPUTS; mask 1: a real step), returns the last step's
action in the env's bounds, and carries run_facts as its metadata (docs/export.md: the env loop).
"""
from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from models import DecisionTransformer

INPUTS = ("states", "actions", "returns_to_go", "timesteps", "mask")  # the file's inputs, in order
SUFFIX = ".onnx"
MISSING = "export=true needs onnx and onnxscript: pip install -r requirements-extra.txt"


class ExportedPolicy(nn.Module):
    """A DecisionTransformer as a fixed-K policy: raw, left-padded windows -> the last step's action."""

    def __init__(self, model: DecisionTransformer, reward_scale: float):
        super().__init__()
        self.model = model.eval()
        self.reward_scale = float(reward_scale)
        self.last_timestep = model.embed_timestep.num_embeddings - 1

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K), mask (B, K) -> (B, act).
        The real steps are rotated to the front: causal attention keeps the padding behind them out of their
        outputs, and the only position embedding is the timestep's, so the action is the model's on them alone."""
        B, K, _ = states.shape
        real = mask.sum(1).long()  # (B,) real steps, the last `real` of the window
        order = (torch.arange(K, device=states.device) + (K - real)[:, None]) % K  # (B, K) real steps first
        take = lambda x: torch.gather(x, 1, order[..., None].expand_as(x))  # noqa: E731  (B, K, d) reordered
        timesteps = torch.gather(timesteps.clamp(0, self.last_timestep), 1, order)
        action_preds = self.model(take(states), take(actions), take(returns_to_go) / self.reward_scale,
                                  timesteps)["action"]  # (B, K, act)
        last = (real - 1).clamp(min=0)[:, None, None].expand(B, 1, action_preds.shape[-1])  # (B, 1, act)
        return torch.gather(action_preds, 1, last)[:, 0]  # (B, act)


def run_facts(model: DecisionTransformer, cfg: DictConfig) -> dict:
    """What a policy file says of itself: its metadata, each value JSON."""
    statistics = {k: getattr(model, k).tolist() for k in ("state_mean", "state_std", "action_low", "action_high")}
    return {"env_id": cfg.env.id, "target_return": cfg.eval.target_return, "context_len": model.context_len,
            "reward_scale": cfg.buffer.reward_scale, **statistics, "ref_min_score": cfg.env.ref_min_score,
            "ref_max_score": cfg.env.ref_max_score}


def export_policy(model: DecisionTransformer, facts: dict) -> bytes:
    """The ONNX file of `model` carrying `facts` (run_facts); the model moves to the CPU in fp32. Any batch size."""
    try:
        import onnx
        import onnxscript  # noqa: F401  torch's ONNX exporter writes through it
    except ImportError:
        raise ImportError(MISSING) from None
    policy = ExportedPolicy(model.cpu().float(), facts["reward_scale"]).eval().requires_grad_(False)
    B, K = 2, model.context_len  # an example batch of 2: a batch of 1 would be fixed at 1
    mask = torch.zeros(B, K)
    mask[:, -1] = 1  # windows of zeros with one real step
    inputs = (torch.zeros(B, K, model.state_dim), torch.zeros(B, K, model.act_dim), torch.zeros(B, K, 1),
              torch.zeros(B, K, dtype=torch.long), mask)
    batch = {0: torch.export.Dim("batch")}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # no "torchvision is not installed" lines
    with warnings.catch_warnings():  # torch's own remarks: inputs sharing one batch axis, a deprecation inside it
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)", category=FutureWarning)
        program = torch.onnx.export(policy, inputs, input_names=list(INPUTS), output_names=["action"],
                                    dynamic_shapes=[batch] * len(INPUTS), dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in facts.items()})
    return proto.SerializeToString()
