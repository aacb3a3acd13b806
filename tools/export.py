"""A trained policy as one file that runs without this project: ONNX (onnxruntime, any language) or TorchScript.

    python evaluate.py run=runs/<date>/<time> export=onnx          # seed<N>/final.onnx of each seed
    python evaluate.py run=runs/<date>/<time> export=torchscript   # seed<N>/final.torchscript.pt

The file takes the episode's last K raw steps, left-padded (onnx_policy.INPUTS; mask 1: a real step), returns the
last step's action in the env's bounds, and carries run_facts. tools/onnx_policy.py runs it (docs/export.md).
"""
from __future__ import annotations

import io
import json
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from tools.onnx_policy import INPUTS, MISSING_PACKAGE

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from models import DecisionTransformer

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # export=<format>: the file's suffix


class ExportedPolicy(nn.Module):
    """A DecisionTransformer as a fixed-K policy: raw, left-padded windows -> the last step's action."""

    def __init__(self, model: DecisionTransformer, reward_scale: float):
        super().__init__()
        self.model = model.eval()
        self.reward_scale = float(reward_scale)
        self.last_timestep = model.embed_timestep.num_embeddings - 1

    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K), mask (B, K) -> (B, act)

        The real steps are rotated to the front: causal attention keeps the padding behind them out of their
        outputs, and the only position embedding is the timestep's, so the action is the model's on them alone.
        """
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
    """What a policy file says of itself (JSON values): ONNX metadata_props, TorchScript's metadata.json."""
    return {"env_id": cfg.env.id, "env_kwargs": dict(cfg.env.kwargs or {}), "target_return": cfg.eval.target_return,
            "context_len": model.context_len, "reward_scale": cfg.buffer.reward_scale,
            "state_mean": model.state_mean.tolist(), "state_std": model.state_std.tolist(),
            "action_low": model.action_low.tolist(), "action_high": model.action_high.tolist(),
            "ref_min_score": cfg.env.ref_min_score, "ref_max_score": cfg.env.ref_max_score}


def export_policy(model: DecisionTransformer, facts: dict, fmt: str) -> bytes:
    """The policy file of format `fmt` carrying `facts` (run_facts); the model moves to the CPU in fp32."""
    policy = ExportedPolicy(model.cpu().float(), facts["reward_scale"]).eval().requires_grad_(False)  # no graph
    K, mask = model.context_len, torch.zeros(1, model.context_len)
    mask[:, -1] = 1  # a window of zeros with one real step
    inputs = (torch.zeros(1, K, model.state_dim), torch.zeros(1, K, model.act_dim), torch.zeros(1, K, 1),
              torch.zeros(1, K, dtype=torch.long), mask)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # `q, k, v = ...` unpacks a fixed dim of 3
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(policy, inputs), buffer, _extra_files={"metadata.json": json.dumps(facts)})
            return buffer.getvalue()
        try:
            import onnx  # torch's exporter writes through it
        except ImportError:
            raise ImportError(f"export=onnx needs onnx: {MISSING_PACKAGE}") from None
        batch = {name: {0: "batch"} for name in (*INPUTS, "action")}
        torch.onnx.export(policy, inputs, buffer, input_names=list(INPUTS), output_names=["action"],
                          dynamic_axes=batch, dynamo=False)  # no onnxscript needed
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in facts.items()})
    return proto.SerializeToString()
