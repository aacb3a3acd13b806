"""A small kit below the training loop: scores, seeding, devices, atomic files and CSVs, figures, video."""
from __future__ import annotations

import csv
import io
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from unittest import mock

import numpy as np
import torch
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from omegaconf import DictConfig


def normalized_score(returns: ArrayLike, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL's normalized score: 0 = random policy, 100 = expert (d4rl's infos.py constants)."""
    return 100.0 * (np.asarray(returns) - ref_min) / (ref_max - ref_min)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """auto: cuda, then Apple's mps, then cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def seed_device(name: str, index: int) -> str:
    """The device of a run's index-th seed process: on a CUDA machine the visible GPUs in turn, else the run's."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{index % torch.cuda.device_count()}"
    return name


def native_bf16(device: torch.device) -> bool:
    """Does `device` compute bf16 natively (a GPU of compute capability 8.0 on, a CPU with avx512_bf16 or AMX)?"""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 where `device` computes it natively, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


# Atomic writes: a file is either the old one or the complete new one, never half written.


class WriteError(OSError):
    """A file that could not be written (a full disk, a read-only folder): the message names it and the fix."""

    def __str__(self) -> str:
        return f"cannot write {self.filename} ({self.strerror}): free space on its disk or make its folder writable"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`data` into `path` by a temporary file and a rename; WriteError naming `path` when that fails. Its folder is
    made if missing, but not the folders above it: a run folder that vanished is not made again by a late write."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for sharing
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)  # gone with its folder, if that was deleted
        if isinstance(e, OSError):
            raise WriteError(e.errno, e.strerror, str(path)) from None
        raise


def new_path(path: Path) -> Path:
    """path, or path-1, path-2, ... with its suffix: the first that names no file (an output replaces nothing)."""
    return next(p for p in (path.with_stem(f"{path.stem}-{i}") if i else path for i in range(10_000)) if not p.exists())


def refuse_replacing(path: str | Path, force: bool, option: str = "--force") -> None:
    """SystemExit in one line when `path` exists and `force` was not given: an output replaces no file unasked."""
    if Path(path).exists() and not force:
        raise SystemExit(f"error: {path} exists: give another --out, or {option} to replace it")


def atomic_torch_save(obj: object, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Rows (a list of dicts with the same keys) -> CSV, atomically."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def read_csv(path: str | Path) -> dict[str, np.ndarray]:
    """CSV -> dict of float arrays by column; empty dict if the file is missing or empty."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


# The results figure and the video


def as_list(paths: str | Sequence[str] | None) -> list[str]:
    """buffer.path as a list of files: one file, or several read in order as one dataset."""
    if not paths:
        return []
    return [paths] if isinstance(paths, str) else list(paths)


def dataset_name(cfg: DictConfig) -> str:
    """buffer.dataset, or the stems of buffer.path's files joined by '+'."""
    return "+".join(Path(p).stem for p in as_list(cfg.buffer.path)) if cfg.buffer.path else cfg.buffer.dataset


def run_title(cfg: DictConfig) -> str:
    """'hopper-medium', or the env and the file names for buffer.path."""
    return f"{cfg.env.name}-{dataset_name(cfg)}"


def mean_std_over_seeds(curves: list[dict], key: str) -> tuple[np.ndarray, ...] | None:
    """Steps, mean, std and seed count of `key` at every step some seed has reached (a seed still training too)."""
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set().union(*(set(c["step"]) for c in curves)))
    by_step = [dict(zip(c["step"], c[key])) for c in curves]
    values = [[b[s] for b in by_step if s in b] for s in steps]
    return (np.array(steps), np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values]),
            np.array([len(v) for v in values]))


def pyplot() -> ModuleType:
    """matplotlib.pyplot drawing to files only (the Agg backend), imported when a figure is first drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """The figure as a PNG, written atomically; the figure is closed. Returns path."""
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, image.getvalue())
    return Path(path)


def plot_results(eval_tables: list[dict], train_tables: list[dict], title: str, target_return: float, ref_min: float,
                 ref_max: float, path: str | Path) -> None:
    """Draw the results figure (results.png) from the seeds' eval.csv and train.csv tables (Run.tables)."""
    fig, (ax_ret, ax_loss) = pyplot().subplots(1, 2, figsize=(11, 4))
    columns = list(dict.fromkeys(c for t in train_tables for c in t if c not in ("step", "lr")))  # core.losses' names
    labels = {"loss": "training loss" if columns == ["loss"] else "total loss"}
    curves = [(ax_ret, mean_std_over_seeds(eval_tables, "return_mean"), "eval return", "C0")]
    curves += [(ax_loss, mean_std_over_seeds([t for t in train_tables if c in t], c), labels.get(c, c), f"C{i + 1}")
               for i, c in enumerate(columns)]
    for ax, curve, label, color in curves:
        if curve is None:
            continue
        steps, mean, std, counts = curve
        n = counts.max()
        seeds = f"{counts.min()}-{n} seeds" if counts.min() < n else f"{n} seed{'s' if n > 1 else ''}"  # some training
        ax.plot(steps, mean, color=color, marker="o" if len(steps) < 30 else None, label=f"{label} (mean of {seeds})")
        if n > 1:
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25, label="+- std over seeds")
    ax_ret.axhline(target_return, color="gray", linestyle="--", label=f"target return {target_return:g}")
    ax_ret.set(xlabel="training step", ylabel="return", title="evaluation")
    to_norm = lambda r: normalized_score(r, ref_min, ref_max)  # noqa: E731
    from_norm = lambda s: ref_min + np.asarray(s) / 100.0 * (ref_max - ref_min)  # noqa: E731
    ax_ret.secondary_yaxis("right", functions=(to_norm, from_norm)).set_ylabel("normalized score")
    ax_loss.set(xlabel="training step", ylabel="loss", title="training loss", yscale="log")
    for ax in (ax_ret, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def plot_sweep(rows: list[dict], data_scores: np.ndarray | None, to_score: Callable[[np.ndarray], np.ndarray],
               title: str, path: str | Path, trained_scores: np.ndarray | None = None) -> None:
    """The sweep: achieved against target normalized score (mean +- std over seeds), the dataset's range and mean
    (data_scores; None: left out) and, when percentile BC kept only some, the trajectories trained on."""
    targets, seeds = sorted({r["target"] for r in rows}), sorted({r["seed"] for r in rows})
    per_seed = np.array([[np.mean([r["score"] for r in rows if r["seed"] == s and r["target"] == t])
                          for t in targets] for s in seeds])  # (seeds, targets): each seed's mean over episodes
    x, mean, std = to_score(np.array(targets)), per_seed.mean(0), per_seed.std(0)
    fig, ax = pyplot().subplots(figsize=(6.5, 5))
    if data_scores is not None:  # None: the dataset is not on this machine
        ax.axhspan(data_scores.min(), data_scores.max(), color="gray", alpha=0.15,
                   label="dataset trajectories (min-max)")
        if trained_scores is not None:
            ax.axhspan(trained_scores.min(), trained_scores.max(), color="gray", alpha=0.3,
                       label=f"trained on: the top {len(trained_scores) / len(data_scores):.0%} "
                             f"({trained_scores.min():.1f}-{trained_scores.max():.1f})")
        ax.axhline(data_scores.mean(), color="gray", linestyle=":", label=f"behaviour mean {data_scores.mean():.1f}")
    ax.plot(x, x, color="black", linestyle="--", linewidth=1, label="achieved = target")
    ax.plot(x, mean, color="C0", marker="o", label=f"achieved (mean of {len(seeds)} seed{'s' * (len(seeds) > 1)})")
    if len(seeds) > 1:
        ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25, label="+- std over seeds")
    ax.set(xlabel="target return (normalized score)", ylabel="achieved return (normalized score)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


RENDERERS = ("egl", "osmesa", "glfw")  # the MUJOCO_GL values gymnasium's MuJoCo renderer accepts
RENDERING_FIX = "headless rendering needs MUJOCO_GL=egl (or osmesa); or leave the video out with eval.video=false"


def import_mujoco_without_opengl() -> None:
    """Import mujoco with MUJOCO_GL=disable: a bad MUJOCO_GL fails only where a video is filmed."""
    with mock.patch.dict(os.environ, MUJOCO_GL="disable"):
        import mujoco  # noqa: F401


def rendering_problem() -> str | None:
    """Why no video can be filmed here (MUJOCO_GL's value, or its OpenGL error), in one line with the fix; or None."""
    value = os.environ.get("MUJOCO_GL")
    if value not in RENDERERS:
        return f"MUJOCO_GL={value}: not one of {', '.join(RENDERERS)}; {RENDERING_FIX}"
    try:
        from gymnasium.envs.mujoco.mujoco_rendering import _ALL_RENDERERS
        _ALL_RENDERERS[value](16, 16).free()
    except Exception as e:  # each backend fails its own way (ImportError, GLFWError, EGL errors)
        return f"MUJOCO_GL={value}: no OpenGL context ({type(e).__name__}: {e}); {RENDERING_FIX}"
    return None


def save_video(frames: list[np.ndarray], path: str | Path, fps: int = 30) -> None:
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(exist_ok=True)  # as atomic_write_bytes: its folder, not the folders above it
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp.mp4")  # format from the suffix
    try:
        imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_device(arrays: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """numpy arrays -> tensors on `device`; to a GPU from pinned memory, without waiting for its running steps."""
    tensors = [torch.from_numpy(x) for x in arrays]
    if device.type == "cuda":  # a plain copy would block the host until the GPU's queue is empty
        return [t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return tensors
