"""Helpers below the training loop: scores, seeding, atomic files, metrics, the figure, the video."""
import csv
import io
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def normalized_score(returns, ref_min, ref_max):
    """D4RL's normalized score: 0 = random policy, 100 = expert (d4rl's infos.py constants)."""
    return 100.0 * (np.asarray(returns) - ref_min) / (ref_max - ref_min)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_torch_threads(num_processes):
    """Share this machine's cores between `num_processes` training processes; OMP_NUM_THREADS, if set, wins."""
    if not os.environ.get("OMP_NUM_THREADS"):  # torch itself starts with that many threads
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Atomic writes: a file is either the old one or the complete new one, never half written.


def atomic_write_bytes(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for sharing
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_csv(rows, path):
    """Rows (a list of dicts with the same keys) -> CSV, atomically."""
    text = io.StringIO()
    if rows:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def read_csv(path):
    """CSV -> dict of float arrays by column; empty dict if the file is missing or empty."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


# ---------------------------------------------------------------------------------------------
# The results figure and the video


def mean_std_over_seeds(curves, key):
    """Align seeds' curves on their common steps; return steps, mean, std (0 for one seed), number of seeds."""
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c["step"]) for c in curves)))
    values = np.array([[dict(zip(c["step"], c[key]))[s] for s in steps] for c in curves])  # (seeds, steps)
    return np.array(steps), values.mean(0), values.std(0), len(curves)


def plot_results(run_dir, title, target_return, ref_min, ref_max):
    """Draw results.png from the run's seed*/eval.csv and seed*/train.csv files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    seed_dirs = sorted(run_dir.glob("seed*"))
    evals = mean_std_over_seeds([read_csv(d / "eval.csv") for d in seed_dirs], "return_mean")
    losses = mean_std_over_seeds([read_csv(d / "train.csv") for d in seed_dirs], "loss")
    fig, (ax_ret, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, curve, label, color in ((ax_ret, evals, "eval return", "C0"), (ax_loss, losses, "action MSE", "C1")):
        if curve is None:
            continue
        steps, mean, std, n = curve
        ax.plot(steps, mean, color=color, marker="o" if len(steps) < 30 else None,
                label=f"{label} (mean of {n} seed{'s' if n > 1 else ''})")
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
    fig.suptitle(f"{title}   ({run_dir})", fontsize=10)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(run_dir / "results.png", image.getvalue())


def save_video(frames, path, fps=30):
    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")  # the encoder picks the format from the suffix
    try:
        imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
