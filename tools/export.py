"""A trained policy as one file that runs without this project: ONNX (onnxruntime, any language) or TorchScript.

    python evaluate.py run=runs/<date>/<time> export=onnx          # seed<N>/final.onnx of each seed
    python evaluate.py run=runs/<date>/<time> export=torchscript   # seed<N>/final.torchscript.pt

The file takes the last K steps of an episode, raw, as the env gives them, left-padded at an episode's first steps:
states (B, K, obs), actions (B, K, act) (the last one is not read), returns_to_go (B, K, 1) in the env's reward
units, timesteps (B, K) int64, mask (B, K) float32 (1: a real step; the real steps are the last ones), and returns
the action of the last step (B, act) in the env's bounds. The checkpoint's state statistics and action bounds and
the run's reward scale are inside, and the file says what it is (run_facts: its env, target return, context length,
normalization, action bounds, reference scores, reward scale). tools/onnx_policy.py runs an .onnx file in an env
loop with numpy and onnxruntime only (docs/export.md).
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
        """states (B, K, obs), actions (B, K, act), returns_to_go (B, K, 1), timesteps (B, K), mask (B, K) -> (B, act).

        The real steps are moved to the front of the window (a rotation): the causal attention keeps the padding
        behind them out of their outputs, and the model has no position embedding but the timestep's, so the
        action equals the model's on the real steps alone.
        """
        B, K, _ = states.shape
        real = mask.sum(1).long()  # (B,) real steps, the last `real` of the window
        order = (torch.arange(K, device=states.device) + (K - real)[:, None]) % K  # (B, K) real steps first
        take = lambda x: torch.gather(x, 1, order[..., None].expand_as(x))  # noqa: E731  (B, K, d) reordered
        action_preds = self.model(take(states), take(actions), take(returns_to_go) / self.reward_scale,
                                  torch.gather(timesteps.clamp(0, self.last_timestep), 1, order))["action"]  # (B, K, act)
        last = (real - 1).clamp(min=0)[:, None, None].expand(B, 1, action_preds.shape[-1])  # (B, 1, act)
        return torch.gather(action_preds, 1, last)[:, 0]  # (B, act)


def example_inputs(model: DecisionTransformer, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """A window of zeros (one real step) of the exported policy's input shapes and dtypes."""
    K, mask = model.context_len, torch.zeros(batch, model.context_len)
    mask[:, -1] = 1
    return (torch.zeros(batch, K, model.state_dim), torch.zeros(batch, K, model.act_dim), torch.zeros(batch, K, 1),
            torch.zeros(batch, K, dtype=torch.long), mask)


def run_facts(model: DecisionTransformer, cfg: DictConfig) -> dict:
    """What a policy file says of itself, from its model and its run's config (JSON values): ONNX metadata_props,
    TorchScript's metadata.json."""
    return {"env_id": cfg.env.id, "env_kwargs": dict(cfg.env.kwargs or {}), "target_return": cfg.eval.target_return,
            "context_len": model.context_len, "reward_scale": cfg.buffer.reward_scale,
            "state_mean": model.state_mean.tolist(), "state_std": model.state_std.tolist(),
            "action_low": model.action_low.tolist(), "action_high": model.action_high.tolist(),
            "ref_min_score": cfg.env.ref_min_score, "ref_max_score": cfg.env.ref_max_score}


def export_policy(model: DecisionTransformer, facts: dict, fmt: str) -> bytes:
    """The bytes of the policy file of format `fmt` (onnx, torchscript) that carries `facts` (run_facts: its
    reward_scale at least); ImportError names the install line. The model (a loaded policy) is moved to the CPU in
    fp32 and its parameters stop requiring gradients."""
    policy = ExportedPolicy(model.cpu().float(), facts["reward_scale"]).eval().requires_grad_(False)  # no graph
    inputs, buffer = example_inputs(model), io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # `q, k, v = ...` unpacks a fixed dim of 3
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(policy, inputs), buffer, _extra_files={"metadata.json": json.dumps(facts)})
        elif fmt == "onnx":
            try:
                import onnx  # torch's exporter writes through it
            except ImportError:
                raise ImportError(f"export=onnx needs onnx: {MISSING_PACKAGE}") from None
            batch = {name: {0: "batch"} for name in INPUTS}
            torch.onnx.export(policy, inputs, buffer, input_names=list(INPUTS), output_names=["action"],
                              dynamic_axes={**batch, "action": {0: "batch"}}, dynamo=False)  # no onnxscript needed
            proto = onnx.load_from_string(buffer.getvalue())
            onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in facts.items()})
            return proto.SerializeToString()
        else:
            raise ValueError(f"export={fmt}: choose one of {', '.join(FORMATS)}")
    return buffer.getvalue()
