"""An exported .onnx policy in an env loop, with numpy and onnxruntime only (copy this file beside your own code);
the file's metadata is tools/export.py's run_facts.

    policy = OnnxPolicy("runs/<date>/<time>/seed0/final.onnx")   # conditioned on the run's eval.target_return
    action = policy.act(observation, reward)                      # docs/export.md: the env loop
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INPUTS = ("states", "actions", "returns_to_go", "timesteps", "mask")  # the file's inputs, in order
MISSING_PACKAGE = "pip install -r requirements-extra.txt"  # brings onnx and onnxruntime


class OnnxPolicy:
    """Keeps the episode's last K steps; metadata: what the file says of itself (env_id, target_return, ...)."""

    def __init__(self, path: str | Path, target_return: float | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(f"running an .onnx policy needs onnxruntime: {MISSING_PACKAGE}") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {key: json.loads(value) for key, value in props.items()}
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.K, self.obs_dim = shapes["states"][1:]
        self.act_dim = shapes["actions"][2]
        self.target_return = self.metadata["target_return"] if target_return is None else target_return
        self.reset()

    def normalized_score(self, episode_return: float) -> float:
        """An episode's return on the scale of the file's reference scores (0: ref_min_score, 100: ref_max_score)."""
        low, high = self.metadata["ref_min_score"], self.metadata["ref_max_score"]
        return 100 * (episode_return - low) / (high - low)

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
