"""A trained policy as one file that runs without this project: ONNX (onnxruntime, any language) or TorchScript.

    python evaluate.py run=runs/<date>/<time> export=onnx          # seed<N>/final.onnx of each seed
    python evaluate.py run=runs/<date>/<time> export=torchscript   # seed<N>/final.torchscript.pt

The file takes the last K steps of an episode, raw, as the env gives them, left-padded at an episode's first steps:
states (B, K, obs), actions (B, K, act) (the last one is not read), returns_to_go (B, K, 1) in the env's reward
units, timesteps (B, K) int64, mask (B, K) float32 (1: a real step; the real steps are the last ones), and returns
the action of the last step (B, act) in the env's bounds. The checkpoint's state statistics and action bounds and
the run's reward scale are inside. OnnxPolicy keeps that window for an env loop (docs/export.md).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    from models import DecisionTransformer

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # export=<format>: the file's suffix
INPUTS = ("states", "actions", "returns_to_go", "timesteps", "mask")
MISSING_PACKAGE = "pip install -r requirements-extra.txt"  # brings onnx and onnxruntime


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


def export_policy(model: DecisionTransformer, reward_scale: float, fmt: str) -> bytes:
    """The bytes of the policy file of format `fmt` (onnx, torchscript); ImportError names the install line.
    The model (a loaded policy) is moved to the CPU in fp32 and its parameters stop requiring gradients."""
    policy = ExportedPolicy(model.cpu().float(), reward_scale).eval().requires_grad_(False)  # outputs: no graph
    inputs, buffer = example_inputs(model), io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # `q, k, v = ...` unpacks a fixed dim of 3
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(policy, inputs), buffer)
        elif fmt == "onnx":
            try:
                import onnx  # noqa: F401  torch's exporter writes through it
            except ImportError:
                raise ImportError(f"export=onnx needs onnx: {MISSING_PACKAGE}") from None
            batch = {name: {0: "batch"} for name in INPUTS}
            torch.onnx.export(policy, inputs, buffer, input_names=list(INPUTS), output_names=["action"],
                              dynamic_axes={**batch, "action": {0: "batch"}}, dynamo=False)  # no onnxscript needed
        else:
            raise ValueError(f"export={fmt}: choose one of {', '.join(FORMATS)}")
    return buffer.getvalue()


class OnnxPolicy:
    """An exported .onnx policy in an env loop: keeps the episode's last K steps (numpy and onnxruntime only)."""

    def __init__(self, path: str | Path, target_return: float):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(f"running an .onnx policy needs onnxruntime: {MISSING_PACKAGE}") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.K, self.obs_dim = shapes["states"][1:]
        self.act_dim = shapes["actions"][2]
        self.target_return = target_return
        self.reset()

    def reset(self) -> None:
        """A new episode: an empty window and the full target return to go."""
        K = self.K
        self.window = {"states": np.zeros((1, K, self.obs_dim), np.float32),
                       "actions": np.zeros((1, K, self.act_dim), np.float32),
                       "returns_to_go": np.zeros((1, K, 1), np.float32),
                       "timesteps": np.zeros((1, K), np.int64), "mask": np.zeros((1, K), np.float32)}
        self.return_to_go, self.t = float(self.target_return), 0

    def act(self, observation: np.ndarray, reward: float = 0.0) -> np.ndarray:
        """The action for `observation`; `reward`: the reward the previous action earned (0 at the first step)."""
        self.return_to_go -= reward
        for name, value in zip(INPUTS, (observation, 0.0, self.return_to_go, self.t, 1.0)):
            step = self.window[name]
            step[:, :-1] = step[:, 1:].copy()  # the window moves one step on
            step[0, -1] = value
        action = self.session.run(None, self.window)[0]  # (1, act)
        self.window["actions"][0, -1] = action[0]
        self.t += 1
        return action[0]
