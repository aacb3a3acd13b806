"""Helpers below the training loop: scores, seeding, devices, signals, atomic files, the Run folder, figure, video."""
import csv
import hashlib
import io
import json
import logging
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def normalized_score(returns, ref_min, ref_max):
    """D4RL's normalized score: 0 = random policy, 100 = expert (d4rl's infos.py constants)."""
    return 100.0 * (np.asarray(returns) - ref_min) / (ref_max - ref_min)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def usable_cores():
    """The cores this process may run on (a Slurm job's allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_torch_threads(num_processes):
    """Share the usable cores between `num_processes` training processes; OMP_NUM_THREADS, if set, wins."""
    if not os.environ.get("OMP_NUM_THREADS"):  # torch itself starts with that many threads
        torch.set_num_threads(max(1, usable_cores() // num_processes))


def pick_device(name):
    """auto: cuda, then Apple's mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def native_bf16(device):
    """Does `device` compute bf16 matmuls natively (CUDA with bf16; a CPU with avx512_bf16 or AMX)?"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(getattr(torch.cpu, check, lambda: False)()
                   for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return False


def pick_precision(precision, device):
    """auto -> bf16 where `device` computes it natively, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


# ---------------------------------------------------------------------------------------------
# Ctrl-C, SIGTERM and a scheduler's preemption notice: the loop checkpoints and stops.

# submitit (Hydra's submitit launchers) warns a job with SIGUSR2 before Slurm stops it (its time limit, or a
# preemption where the cluster sends the job's signal); Slurm's own notice is SIGTERM, which submitit ignores.
PREEMPTION_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
STOP_SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, PREEMPTION_SIGNAL) if s is not None]
_signals = []  # the stop signals received, in order
_requeue = None  # submitit's handler of the preemption signal: it resubmits the job (which then resumes)


def _note_signal(signum, frame):
    _signals.append(signal.Signals(signum).name)


def stop_on_signals():
    """From now on SIGINT, SIGTERM and the preemption signal only set a flag that the training loop reads."""
    global _requeue
    previous = signal.getsignal(PREEMPTION_SIGNAL) if PREEMPTION_SIGNAL else None
    if callable(previous) and previous is not _note_signal:  # a submitit job: requeue once the checkpoint is written
        _requeue = previous
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note_signal)


def stop_requested():
    """The name of the first signal that asked this process to stop (SIGINT, SIGTERM, SIGUSR2), or None."""
    return _signals[0] if _signals else None


def requeue_if_preempted():
    """In a submitit job that got its preemption notice, after the checkpoint: let submitit requeue the job.

    submitit resubmits the same job (same overrides, same folder); main.py resumes that folder. Exits when requeued.
    """
    if _requeue is not None and PREEMPTION_SIGNAL.name in _signals:
        log.warning("preempted: submitit requeues this job, which resumes from its checkpoint")
        _requeue(PREEMPTION_SIGNAL.value, None)


def interrupted_exit_code():
    """128 + the signal's number, as a shell reports a process a signal ended."""
    return 128 + signal.Signals[stop_requested()].value


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint of the current step: resume= continues it."""


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


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
# The run folder


class RunError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the folder and the fix."""


class Run:
    """A run folder and every file in it; nothing else writes there.

        config.yaml, main.log       the resolved config; the log (main_mp.py: and seed<N>/train.log, error.txt)
        submitit_job                the submitit job that made the folder (Hydra's submitit launchers only)
        results.png, summary.json   the figure and the final scores over seeds
        seed<N>/train.csv, eval.csv the metrics, rewritten at each checkpoint
        seed<N>/last.pt             the training state resume= continues from
        seed<N>/best.pt, final.pt   the policy at its best periodic eval and at the end
        seed<N>/final.json          the final evaluation; video.mp4 one episode of it
        sweep_final.csv/.png        evaluate.py's sweep of target returns; seed<N>/sweep_final.json each seed's part
        seed<N>/events.out.tfevents.*, seed<N>/wandb/   with logger=[csv,tensorboard] / [csv,wandb]
    """

    def __init__(self, folder):
        self.dir = Path(os.path.abspath(folder))  # as the user named it (a symlinked runs/ stays runs/)

    @property
    def name(self):
        """The folder's last two parts (runs/<date>/<time> -> <date>/<time>): a label without machine paths."""
        return "/".join(self.dir.parts[-2:])

    @staticmethod
    def claim_new_folder(base):
        """Create and return a folder no other run has: base, else base-1, base-2, ... (atomic mkdir)."""
        Path(base).parent.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            folder = Path(f"{base}-{i}" if i else base)
            try:
                folder.mkdir()
                return str(folder)
            except FileExistsError:
                continue
        raise RunError(f"{base}: 1000 runs of that name already exist")

    def holds_run(self):
        return (self.dir / "config.yaml").is_file()

    def seed_dir(self, seed):
        return self.dir / f"seed{seed}"

    # the config

    def save_config(self, yaml_text):
        atomic_write_bytes(self.dir / "config.yaml", yaml_text.encode())

    def config_path(self):
        return self.dir / "config.yaml"

    def save_job(self, job_id):
        """The submitit job that made this folder: only that job, when submitit requeues it, resumes it unasked."""
        atomic_write_bytes(self.dir / "submitit_job", job_id.encode())

    def job(self):
        path = self.dir / "submitit_job"
        return path.read_text() if path.exists() else None

    # one seed's training state, metrics and checkpoints

    def save_state(self, seed, model, optimizer, scheduler, rng, progress):
        """The metrics CSVs and last.pt: everything a resumed run needs to continue exactly."""
        write_csv(progress["train"], self.seed_dir(seed) / "train.csv")
        write_csv(progress["eval"], self.seed_dir(seed) / "eval.csv")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "progress": progress}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_torch_save(state, self.seed_dir(seed) / "last.pt")

    def load_state(self, seed, model, optimizer, scheduler, rng):
        """Restore what save_state wrote and return the progress dict; None if the seed has no last.pt."""
        path = self.seed_dir(seed) / "last.pt"
        if not path.exists():
            return None
        try:
            state = load_checkpoint(path)
        except RunError as e:
            raise RunError(f"{e}; delete it to train seed {seed} again from step 0") from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["progress"]

    def save_policy(self, seed, name, policy):
        """best.pt / final.pt: a dict of tensors and plain values (loads with weights_only=True)."""
        atomic_torch_save(policy, self.seed_dir(seed) / name)

    def policy_path(self, seed, name):
        return self.seed_dir(seed) / name

    def seed_log(self, seed):
        """seed<N>/train.log, the log of the seed's own process (main_mp.py); its folder is made."""
        self.seed_dir(seed).mkdir(parents=True, exist_ok=True)
        return self.seed_dir(seed) / "train.log"

    def save_error(self, seed, text):
        """seed<N>/error.txt: why the seed's process stopped (main_mp.py); None removes an earlier one."""
        path = self.seed_dir(seed) / "error.txt"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(path, text.encode())

    def error(self, seed):
        path = self.seed_dir(seed) / "error.txt"
        return path.read_text() if path.exists() else None

    def tracker(self, seed, cfg, step):
        """The seed's TensorBoard / W&B logging (cfg.logger), continuing after `step` when resumed."""
        return Tracker(cfg, self.seed_dir(seed), f"{self.name}/seed{seed}", step)

    def save_final(self, seed, result):
        atomic_write_bytes(self.seed_dir(seed) / "final.json", json.dumps(result, indent=2).encode())

    def final(self, seed):
        """The seed's final.json as a dict, or None while it is unfinished."""
        path = self.seed_dir(seed) / "final.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_video(self, seed, name, frames, fps):
        save_video(frames, self.seed_dir(seed) / name, fps)

    def save_table(self, name, rows):
        """A CSV of the run's own (the sweep of evaluate.py), beside config.yaml."""
        write_csv(rows, self.dir / name)

    def save_sweep_part(self, seed, name, part):
        """One seed's finished sweep (its settings and rows): what a stopped evaluate.py keeps."""
        atomic_write_bytes(self.seed_dir(seed) / f"{name}.json", json.dumps(part).encode())

    def sweep_part(self, seed, name):
        """What save_sweep_part kept, or None."""
        path = self.seed_dir(seed) / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def has_files(self, seed, names):
        return all((self.seed_dir(seed) / name).exists() for name in names)

    # over seeds

    def seeds(self):
        """The seeds that have a folder here."""
        return sorted(int(d.name[4:]) for d in self.dir.glob("seed*") if d.name[4:].isdigit())

    def summarize(self, env, dataset, seeds):
        """Gather the seeds' final.json into summary.json; return it."""
        finals = [f for f in (self.final(s) for s in self.seeds()) if f is not None]
        scores = [f["score_mean"] for f in finals]
        summary = {"env": env, "dataset": dataset, "seeds": [f["seed"] for f in finals],
                   "missing_seeds": sorted(set(seeds) - {f["seed"] for f in finals}),
                   "score_mean": float(np.mean(scores)) if scores else None,
                   "score_std": float(np.std(scores)) if len(scores) > 1 else None,  # no spread over one seed
                   "per_seed": finals}
        atomic_write_bytes(self.dir / "summary.json", json.dumps(summary, indent=2).encode())
        return summary

    def plot(self, title, target_return, ref_min, ref_max):
        """results.png from the seeds' metrics so far."""
        plot_results(self.dir, f"{title}   ({self.name})", target_return, ref_min, ref_max)


class Tracker:
    """A seed's metrics, also in TensorBoard and/or Weights & Biases (cfg.logger); the CSVs stay the record.

    Each is imported only when chosen. A resumed seed continues its own TensorBoard events (those after the
    checkpoint are dropped) and its own W&B run (its id comes from the folder and the seed).
    """

    def __init__(self, cfg, folder, name, step):
        from omegaconf import OmegaConf
        self.tensorboard = self.wandb = None
        config = OmegaConf.to_container(cfg)
        if "wandb" in cfg.logger:  # first: if it cannot start, nothing else is open yet
            import wandb
            run_id = f"{hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:10]}-{Path(folder).name}"
            self.wandb = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=cfg.wandb.mode,
                                    dir=folder, id=run_id, resume="allow", name=name, group=name.rsplit("/", 1)[0],
                                    config=config)
        if "tensorboard" in cfg.logger:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(folder, purge_step=step + 1 if step else None)
            self.tensorboard.add_text("config", "    " + OmegaConf.to_yaml(cfg).replace("\n", "\n    "), step)

    def log(self, section, row):
        """One row of train.csv / eval.csv / final.json as `<section>/<column>` at its step."""
        step = int(row["step"])
        metrics = {f"{section}/{k}": float(v) for k, v in row.items() if k not in ("step", "seed")}
        if self.tensorboard:
            for key, value in metrics.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish(exit_code=1 if exc[0] else 0)


def load_checkpoint(path):
    """A .pt file of this project, loaded without running code (weights_only); RunError if it is damaged.

    numpy scalars are allowed: training states written before the metrics were plain floats hold them.
    """
    numpy_scalars = [np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))]
    try:
        with torch.serialization.safe_globals(numpy_scalars):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 torch raises many kinds for a damaged file
        raise RunError(f"{path} cannot be read ({str(e).splitlines()[0]}): it is damaged or not this project's "
                       f"checkpoint") from None


# ---------------------------------------------------------------------------------------------
# The results figure and the video


def run_title(cfg):
    """'hopper-medium', 'medium-v0 (minari, Hopper-v5)', or the env and the file name for buffer.path."""
    if cfg.buffer.source == "minari":
        return f"{cfg.buffer.dataset.split('/')[-1]} (minari, {cfg.env.id})"
    return f"{cfg.env.name}-{Path(cfg.buffer.path).stem if cfg.buffer.path else cfg.buffer.dataset}"


def mean_std_over_seeds(curves, key):
    """Steps, mean, std and seed count of `key` over the seeds, at every step some seed has reached.

    A seed still training counts only at the steps it has reached, so earlier seeds' curves stay whole.
    """
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set().union(*(set(c["step"]) for c in curves)))
    by_step = [dict(zip(c["step"], c[key])) for c in curves]
    values = [[b[s] for b in by_step if s in b] for s in steps]
    return (np.array(steps), np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values]),
            np.array([len(v) for v in values]))


def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend), imported when a figure is first drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path):
    """The figure as a PNG, written atomically; the figure is closed. Returns path."""
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    pyplot().close(fig)
    atomic_write_bytes(path, image.getvalue())
    return path


def plot_results(run_dir, title, target_return, ref_min, ref_max):
    """Draw results.png from the run's seed*/eval.csv and seed*/train.csv files."""
    plt = pyplot()

    run_dir = Path(run_dir)
    seed_dirs = sorted(run_dir.glob("seed*"))
    evals = mean_std_over_seeds([read_csv(d / "eval.csv") for d in seed_dirs], "return_mean")
    train = [read_csv(d / "train.csv") for d in seed_dirs]
    labels = {"loss": "total loss", "action_mse": "action MSE", "state_mse": "next-state MSE",
              "rtg_mse": "next return-to-go MSE"}  # train.csv's loss columns (core.LOSSES)
    columns = [c for c in labels if any(c in t and t[c].any() for t in train)]  # each loss that is on, apart
    if columns == ["loss"]:  # no auxiliary losses: the total is the action MSE
        labels["loss"] = "training loss"
    curves = [("return", evals, "eval return", "C0")]
    curves += [("loss", mean_std_over_seeds([t for t in train if c in t], c), labels[c], f"C{i + 1}")
               for i, c in enumerate(columns)]
    fig, (ax_ret, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    axes = {"return": ax_ret, "loss": ax_loss}
    for ax_key, curve, label, color in curves:
        ax = axes[ax_key]
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
    save_png(fig, run_dir / "results.png")


def plot_sweep(rows, data_scores, to_score, title, path, trained_scores=None):
    """The return-to-go sweep: achieved against target normalized score (mean +- std over seeds), the line
    achieved = target, and the dataset's trajectories (their range shaded, the behaviour mean dashed; data_scores
    None: left out); trained_scores: the trajectories the policy trained on, when percentile BC kept only some
    (shaded darker)."""
    plt = pyplot()

    targets, seeds = sorted({r["target"] for r in rows}), sorted({r["seed"] for r in rows})
    per_seed = np.array([[np.mean([r["score"] for r in rows if r["seed"] == s and r["target"] == t])
                          for t in targets] for s in seeds])  # (seeds, targets): each seed's mean over episodes
    x, mean, std = to_score(np.array(targets)), per_seed.mean(0), per_seed.std(0)
    fig, ax = plt.subplots(figsize=(6.5, 5))
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


def plot_dataset_returns(datasets, path):
    """One histogram per dataset of its trajectories' returns on the normalized-score axis, with the behaviour
    mean and the env's default target marked. datasets: [(title, scores, target_score)]."""
    plt = pyplot()

    fig, axes = plt.subplots(len(datasets), 1, figsize=(7, 2.2 * len(datasets)), squeeze=False)
    for ax, (title, scores, target) in zip(axes[:, 0], datasets):
        ax.hist(scores, bins=50, color="C0", alpha=0.8)
        ax.axvline(scores.mean(), color="black", linestyle=":", label=f"behaviour mean {scores.mean():.1f}")
        ax.axvline(target, color="C3", linestyle="--", label=f"default target {target:.1f}")
        ax.set(title=f"{title}: {len(scores)} trajectories, max {scores.max():.1f}", ylabel="trajectories")
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("trajectory return (normalized score)")
    fig.tight_layout()
    save_png(fig, path)


def save_video(frames, path, fps=30):
    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp.mp4")  # format from the suffix
    try:
        imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
