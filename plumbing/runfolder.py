"""The one API that writes and reads a run folder: Run, SeedFolder (run.seed(n)) and Tracker (TensorBoard, W&B)."""
import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import utils
from cfgs import schema

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the folder and the fix."""


class FolderVanished(RunError):
    """The run folder was deleted or moved while the run wrote into it: nothing more is written there."""


def read_json(path: Path, fix: str) -> dict | None:
    """A JSON file of a run as a dict, None if it is not written; RunError naming it and `fix` if it is damaged."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not text
        raise RunError(f"{path} is empty or not JSON ({e}): {fix}") from None


class Run:
    """A run folder and its own files (docs/running.md lists them); each seed's folder is a SeedFolder (run.seed(n))."""

    def __init__(self, folder: str | Path):
        self.dir = Path(os.path.abspath(folder))  # as the user named it (a symlinked runs/ stays runs/)

    @property
    def name(self) -> str:
        """The folder's last two parts (runs/<date>/<time> -> <date>/<time>): a label without machine paths."""
        return "/".join(self.dir.parts[-2:])

    @staticmethod
    def claim_new_folder(base: str | Path) -> str:
        """Create and return a folder no other run has: base, else base-1, base-2, ... (atomic mkdir)."""
        Path(base).parent.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            folder = Path(f"{base}-{i}" if i else base)
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                return str(folder)
        raise RunError(f"{base}: 1000 runs of that name already exist")

    def holds_run(self) -> bool:
        return (self.dir / "config.yaml").is_file()

    def check_present(self) -> None:
        """FolderVanished when the run folder is gone (deleted or moved during the run): a write would make it again."""
        if not self.dir.is_dir():
            raise FolderVanished(f"{self.dir}: the run folder vanished (deleted or moved) while the run wrote into "
                                 f"it; nothing more is written there: start a new run, or put the folder back and "
                                 f"resume it")

    def save_config(self, yaml_text: str) -> None:
        utils.atomic_write_bytes(self.dir / "config.yaml", yaml_text.encode())

    def config_path(self) -> Path:
        return self.dir / "config.yaml"

    def saved_config(self) -> dict:
        """config.yaml as a plain dict without its defaults list, an older run's buffer.file as buffer.files."""
        saved = OmegaConf.to_container(OmegaConf.load(self.config_path()))
        saved.pop("defaults", None)
        buffer = saved.get("buffer", {})
        if "file" in buffer:
            file, sha = buffer.pop("file"), buffer.get("sha256")
            buffer["files"], buffer["sha256"] = [file] if file else None, [sha] if sha else None
        return saved

    def config(self) -> DictConfig:
        """config.yaml on the schema, typed and resolved; ConfigError naming the file where today's schema cannot."""
        try:
            cfg = schema.typed(self.saved_config())
        except schema.ConfigError as e:
            raise schema.ConfigError(f"{self.config_path()}: {e}: the run comes from another version of this project; "
                                     f"use that version for it") from None
        OmegaConf.resolve(cfg)
        return cfg

    def seed(self, seed: int) -> "SeedFolder":
        """The folder of seed `seed` (made when a file is first written there)."""
        return SeedFolder(self, seed)

    def seeds(self) -> list[int]:
        """The seeds that have a folder here."""
        return sorted(int(d.name[4:]) for d in self.dir.glob("seed*") if d.name[4:].isdigit())

    def tables(self, kind: str) -> list[dict]:
        """Every seed's `kind` table (train, eval), in seed order."""
        return [self.seed(seed).table(kind) for seed in self.seeds()]

    def save_table(self, name: str, rows: list[dict]) -> None:
        """A CSV of the run's own (the sweep of evaluate.py), beside config.yaml."""
        utils.write_csv(rows, self.dir / name)

    def run_table(self, name: str) -> dict:
        """A CSV of the run's own (evaluate.py's sweep_final.csv) as float arrays by column; {} if missing."""
        return utils.read_csv(self.dir / name)

    def summary(self) -> dict | None:
        """summary.json as a dict, None if it is not written; RunError if it is damaged."""
        return read_json(self.dir / "summary.json", f"python main.py resume={self.dir} writes it again")

    @staticmethod
    def of_sweep(folder: str | Path) -> list["Run"]:
        """A multirun's runs/<date>/<time>-sweep folder -> its job runs 0, 1, ...; [] if it is no sweep folder."""
        jobs = [Run(d) for d in Path(folder).glob("*") if d.name.isdigit() and Run(d).holds_run()]
        return sorted(jobs, key=lambda job: int(job.dir.name))

    def summarize(self, cfg: DictConfig) -> None:
        """Gather the seeds' final.json into summary.json, draw the figure, log the score line."""
        self.check_present()
        finals = [f for f in (self.seed(s).final() for s in self.seeds()) if f is not None]
        scores = [f["score_mean"] for f in finals]
        summary = {"env": cfg.env.name, "dataset": utils.dataset_name(cfg), "seeds": [f["seed"] for f in finals],
                   "missing_seeds": sorted(set(cfg.seeds) - {f["seed"] for f in finals}),
                   "score_mean": float(np.mean(scores)) if scores else None,
                   "score_std": float(np.std(scores)) if len(scores) > 1 else None,  # one seed has no spread
                   "per_seed": finals}
        utils.atomic_write_bytes(self.dir / "summary.json", json.dumps(summary, indent=2).encode())
        self.plot(cfg)
        if scores:
            spread = "" if summary["score_std"] is None else f" +- {summary['score_std']:.1f}"
            log.info("%s: normalized score %.1f%s over seeds %s (final evals of %d episodes)", utils.run_title(cfg),
                     summary["score_mean"], spread, summary["seeds"], cfg.eval.final_episodes)

    def plot(self, cfg: DictConfig, label: str | None = None) -> None:
        """results.png from the seeds' metrics so far, titled with the run's config and `label` (default: name)."""
        self.check_present()
        title = f"{utils.run_title(cfg)}   ({label or self.name})"
        utils.plot_results(self.tables("eval"), self.tables("train"), title, cfg.eval.target_return,
                           cfg.env.ref_min_score, cfg.env.ref_max_score, self.dir / "results.png")

    def publish(self, dest: str | Path, policies: bool) -> list:
        """Copy the finished seeds to share, without training state or this machine's paths; with `policies`, each
        final.pt and the first seed's video. Returns the seeds left out."""
        root = Path(__file__).resolve().parents[1]
        local = [(os.path.realpath(root / "runs") + "/", "runs/"), (str(root) + "/", ""),
                 (str(root.parent) + "/", "../")]
        dest = Path(dest)
        if dest.exists():
            raise SystemExit(f"error: --publish {dest}: exists already; give a new folder")
        seeds = self.seeds()
        unfinished = [self.seed(s).dir.name for s in seeds if self.seed(s).final() is None]
        if len(unfinished) == len(seeds):
            raise SystemExit(f"error: --publish {self.dir}: no seed has finished (no final.json); resume it first")
        video = self.seed(seeds[0]).video_path().relative_to(self.dir)
        for path in sorted(self.dir.rglob("*")):
            relative = path.relative_to(self.dir)
            if path.is_dir() or relative.parts[0] in unfinished or not shared(relative, policies, video):
                continue
            data = path.read_bytes()
            if relative == Path("config.yaml"):  # in today's keys, a new run (not a resume): --config-path retrains it
                data = schema.to_yaml(OmegaConf.merge(self.config(), {"resume": None})).encode()
            if path.suffix in (".yaml", ".log", ".json", ".csv", ".md", ".txt"):
                for machine, relative_path in local:
                    data = data.replace(machine.encode(), relative_path.encode())
            (dest / relative).parent.mkdir(parents=True, exist_ok=True)
            utils.atomic_write_bytes(dest / relative, data)
        copy = Run(dest)
        copy.plot(copy.config(), label=self.name)  # drawn again: without unfinished seeds, titled without local paths
        return unfinished


class SeedFolder:
    """One seed's folder, seed<N>/ of a run, and every file in it (docs/running.md); nothing else names them."""

    def __init__(self, run: Run, seed: int):
        self.run, self.seed = run, seed
        self.dir = run.dir / f"seed{seed}"

    def save_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator, progress: dict) -> None:
        """The metrics CSVs and last.pt: everything a resumed run needs to continue exactly."""
        self.run.check_present()
        self.save_tables(progress["train"], progress["eval"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "progress": progress}
        if torch.cuda.is_initialized():  # a CUDA run's; a CPU run on a GPU machine never starts CUDA
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        utils.atomic_torch_save(state, self.dir / "last.pt")

    def save_tables(self, train_rows: list[dict], eval_rows: list[dict]) -> None:
        """train.csv and eval.csv (a checkpoint rewrites them with its rows)."""
        utils.write_csv(train_rows, self.dir / "train.csv")
        utils.write_csv(eval_rows, self.dir / "eval.csv")

    def table(self, kind: str) -> dict:
        """<kind>.csv (train, eval) as float arrays by column; {} while it is not written; RunError if damaged."""
        path = self.dir / f"{kind}.csv"
        try:
            return utils.read_csv(path)
        except (ValueError, TypeError, KeyError) as e:  # not numbers, not text, rows of other columns
            raise RunError(f"{path} is damaged ({type(e).__name__}: {e}): put back a good copy, or delete it (the "
                           f"figures then leave seed {self.seed}'s {kind} metrics out)") from None

    def load_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> dict | None:
        """Restore what save_state wrote and return the progress dict; None if the seed has no last.pt."""
        path = self.dir / "last.pt"
        if not path.exists():
            return None
        try:
            state = load_checkpoint(path)
        except RunError as e:
            raise RunError(f"{e}; delete it to train seed {self.seed} again from step 0") from None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_initialized():  # the model is on its device: a CUDA run's is
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["progress"]

    def checkpoint_step(self) -> int | None:
        """The step last.pt holds, or None without a readable one."""
        with contextlib.suppress(RunError):  # missing or damaged
            return load_checkpoint(self.dir / "last.pt")["progress"]["step"]
        return None

    def save_policy(self, which: str, policy: dict) -> None:
        """best.pt / final.pt (which: best, final): a dict of tensors and plain values (weights_only loads it)."""
        self.run.check_present()
        utils.atomic_torch_save(policy, self.policy_path(which))

    def policy_path(self, which: str, suffix: str = ".pt") -> Path:
        """The policy file of `which` (best, final); another suffix: its export (.onnx, ...)."""
        return self.dir / f"{which}{suffix}"

    def save_final(self, result: dict) -> None:
        self.run.check_present()
        utils.atomic_write_bytes(self.dir / "final.json", json.dumps(result, indent=2).encode())

    def final(self) -> dict | None:
        """final.json as a dict, or None while the seed is unfinished; RunError if it is damaged."""
        return read_json(self.dir / "final.json", f"delete it, then resume= repeats seed {self.seed}'s final "
                                                  f"evaluation from its last.pt")

    def save_video(self, frames: list[np.ndarray], fps: int, name: str = "video.mp4") -> None:
        utils.save_video(frames, self.video_path(name), fps)

    def video_path(self, name: str = "video.mp4") -> Path:
        """video.mp4 (the final policy's episode), or evaluate.py's video `name`."""
        return self.dir / name

    def log_path(self) -> Path:
        """train.log, the log of the seed's own process (main_mp.py); the folder is made."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / "train.log"

    def save_sweep_part(self, name: str, part: dict) -> None:
        """The seed's finished sweep `name` (its settings and rows): what a stopped evaluate.py keeps."""
        utils.atomic_write_bytes(self.sweep_path(name), json.dumps(part).encode())

    def sweep_part(self, name: str) -> dict | None:
        """What save_sweep_part kept, or None; RunError if it is damaged."""
        return read_json(self.sweep_path(name), f"delete it, then evaluate.py sweeps seed {self.seed} again")

    def sweep_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"


def shared(relative: Path, policies: bool, video: Path) -> bool:
    """Is a run's file part of its shared copy (Run.publish)? Not training state, nor others' logs, nor temporaries."""
    if relative.name in ("last.pt", "best.pt", "MUJOCO_LOG.TXT") or relative.name.startswith("events.out.tfevents"):
        return False
    if any(part.startswith(".") or part == "wandb" for part in relative.parts):  # also .hydra/ of old runs
        return False
    return {".pt": policies, ".mp4": policies and relative == video}.get(relative.suffix, True)


class Tracker:
    """A seed's metrics also in TensorBoard and/or W&B (cfg.logger); a resumed seed continues its events and W&B run."""

    def __init__(self, cfg: DictConfig, folder: str | Path, name: str, step: int):
        self.tensorboard = self.wandb = None
        if "wandb" in cfg.logger:  # first: if it cannot start, nothing else is open yet
            import wandb
            run_id = f"{hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:10]}-{Path(folder).name}"
            self.wandb = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=cfg.wandb.mode,
                                    dir=folder, id=run_id, resume="allow", name=name, group=name.rsplit("/", 1)[0],
                                    config=OmegaConf.to_container(cfg))
        if "tensorboard" in cfg.logger:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(folder, purge_step=step + 1 if step else None)
            self.tensorboard.add_text("config", "    " + OmegaConf.to_yaml(cfg).replace("\n", "\n    "), step)

    def log(self, section: str, row: dict) -> None:
        """One row of train.csv / eval.csv / final.json as `<section>/<column>` at its step."""
        step = int(row["step"])
        metrics = {f"{section}/{k}": float(v) for k, v in row.items() if k not in ("step", "seed")}
        if self.tensorboard:
            for key, value in metrics.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def close(self, failed: bool) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish(exit_code=int(failed))


def load_checkpoint(path: str | Path) -> dict:
    """A .pt file of this project, loaded without running code (weights_only); RunError if it is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 torch raises many kinds for a damaged file
        raise RunError(f"{path} cannot be read ({str(e).splitlines()[0]}): it is damaged or not this project's "
                       f"checkpoint") from None


