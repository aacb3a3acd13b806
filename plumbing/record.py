"""One seed's record below the training loop: metrics, checkpoints, final scores, video, NaN guard, stop, progress."""
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from models import EMA, policy_checkpoint
from plumbing import progress, signals
from plumbing.runfolder import Run, RunError, Tracker

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class NonFiniteScoreError(NonFiniteLossError):
    """An evaluation's score became NaN or inf (the policy's actions or the env's rewards): the seed stops."""


@dataclass
class SeedRecord:
    """What one seed has done so far, and where it goes; made, it resumes exactly from the seed's last.pt, if any."""
    cfg: DictConfig
    seed: int
    run: Run
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator
    show: progress.Bar | progress.Sender  # main.py's bar, main_mp.py's pipe: called at each log and eval, then closed
    ema: EMA | None = None  # train.ema_decay: the averaged weights, evaluated and saved as the policy
    step: int = 0  # the last step trained (and checkpointed)
    best_score: float = -np.inf  # the best periodic eval's score: best.pt's
    train_rows: list[dict] = field(default_factory=list)  # train.csv
    eval_rows: list[dict] = field(default_factory=list)  # eval.csv
    seconds_before: float = 0.0  # training seconds of earlier attempts
    loss_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # since the last log, summed on the device
    evaluated: bool = False  # at the current step

    def __post_init__(self) -> None:
        self.folder = self.run.seed(self.seed)
        state = self.folder.load_state(self.model, self.optimizer, self.scheduler, self.rng)
        if state is not None:
            if not isinstance(state.get("loss_sums"), dict) or self.ema is not None and "ema" not in state:
                raise RunError(f"{self.folder.dir / 'last.pt'}: a checkpoint of another version of this project (or "
                               f"without the EMA train.ema_decay asks for): delete it to train seed {self.seed} from "
                               f"step 0")
            log.info("seed %d: resumed at step %d", self.seed, state["step"])
            self.step, self.best_score, self.seconds_before = state["step"], state["best_score"], state["seconds"]
            self.train_rows, self.eval_rows = state["train"], state["eval"]
            device = next(self.model.parameters()).device
            self.loss_sums = {name: torch.tensor(value, device=device) for name, value in state["loss_sums"].items()}
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        self.started, self.first_step = time.time(), self.step  # this attempt's clock: its pace gives the ETA

    def state(self) -> dict:
        """The state last.pt keeps (SeedFolder.save_state)."""
        state = {"step": self.step, "best_score": self.best_score, "train": self.train_rows, "eval": self.eval_rows,
                 "seconds": self.seconds_before + time.time() - self.started,
                 "loss_sums": {k: v.item() for k, v in self.loss_sums.items()}}
        return state if self.ema is None else {**state, "ema": self.ema.state_dict()}

    @property
    def policy(self) -> torch.nn.Module:
        """What is evaluated and saved: the model, or its moving average (train.ema_decay)."""
        return self.model if self.ema is None else self.ema.policy

    def __enter__(self) -> "SeedRecord":
        self.tracker = Tracker(self.cfg, self.folder.dir, f"{self.run.name}/seed{self.seed}", self.step)
        self.report(self.step)
        return self

    def __exit__(self, *exc: object) -> None:
        self.show.close()
        self.tracker.close(failed=exc[0] is not None)

    def ends(self, step: int) -> float | None:
        """When the seed ends (a time.time()) at this attempt's pace, evals included; None before its first step."""
        now, done = time.time(), step - self.first_step
        return now + (now - self.started) / done * (self.cfg.train.steps - step) if done else None

    def report(self, step: int) -> None:
        """Show the seed's progress at `step`: its loss, last score and end time."""
        loss = self.train_rows[-1]["loss"] if self.train_rows else None
        score = self.eval_rows[-1]["score_mean"] if self.eval_rows else None
        self.show(progress.SeedProgress(self.seed, step, self.cfg.train.steps, loss, score, len(self.eval_rows),
                                        self.ends(step)))

    def add_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """One step's named losses, summed until the next log line."""
        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums[name] + value if name in self.loss_sums else value.clone()

    def log_when_due(self, step: int, lr: float) -> None:
        """Every train.log_every steps and at the last: each loss's mean since the last row, checked, logged."""
        if not (step % self.cfg.train.log_every == 0 or step == self.cfg.train.steps):  # the last may be shorter
            return
        steps_logged = step - (self.train_rows[-1]["step"] if self.train_rows else 0)
        sums = torch.stack(list(self.loss_sums.values())).tolist()  # one sync per interval
        means = {name: total / steps_logged for name, total in zip(self.loss_sums, sums)}
        self.loss_sums = {}
        check_finite(means["loss"], self.seed, step, self.run)
        self.train_rows.append({"step": step, **means, "lr": lr})
        self.tracker.log("train", self.train_rows[-1])
        self.report(step)
        if len(self.train_rows) == 1 and not self.eval_rows:  # something to look at before the first checkpoint
            self.folder.save_tables(self.train_rows, self.eval_rows)
            self.run.plot(self.cfg)

    def eval_due(self, step: int) -> bool:
        """Every train.eval_every steps and at the last."""
        self.evaluated = step % self.cfg.train.eval_every == 0 or step == self.cfg.train.steps
        return self.evaluated

    def add_eval(self, step: int, result: dict) -> None:
        """A periodic eval's result: checked, an eval row, and best.pt when its score is the best so far."""
        check_finite_score(result, self.seed, f"the eval at step {step}")
        log.info("seed %d step %d: loss %.4f, return %.1f +- %.1f, normalized score %.1f, seed ETA %s", self.seed,
                 step, self.train_rows[-1]["loss"], result["return_mean"], result["return_std"], result["score_mean"],
                 progress.eta(self.ends(step)))
        if result["score_mean"] > self.best_score:
            self.best_score = result["score_mean"]
            self.save_policy("best")
        self.eval_rows.append({"step": step, **result})
        self.tracker.log("eval", self.eval_rows[-1])
        self.report(step)

    def checkpoint_when_due(self, step: int) -> None:
        """After an eval, every train.checkpoint_every steps and on a stop signal (then Interrupted): CSVs, last.pt."""
        stop = signals.stop_requested()
        if self.evaluated or step % self.cfg.train.checkpoint_every == 0 or stop:
            if stop and self.loss_sums:  # between log steps: no checkpoint of weights whose loss is unchecked
                check_finite(sum(v.item() for v in self.loss_sums.values()), self.seed, step, self.run)
            self.step = step
            self.folder.save_state(self.model, self.optimizer, self.scheduler, self.rng, self.state())
        if self.evaluated:  # the figure follows the evals (main.py draws it again at the end or on a stop)
            self.run.plot(self.cfg)
        if stop:
            raise signals.Interrupted(f"seed {self.seed} stopped by {stop} at step {step}; its checkpoint is written")

    def save_policy(self, which: str) -> None:
        """best.pt / final.pt: the policy's config and weights."""
        self.folder.save_policy(which, policy_checkpoint(self.policy, self.cfg.model.implementation, self.cfg.env.id))

    def finish(self, result: dict) -> dict:
        """The final evaluation's result as final.json (with the training time), also in the tracker."""
        self.show.close()
        final = {**result, "train_seconds": self.seconds_before + time.time() - self.started}
        self.folder.save_final(final)
        self.tracker.log("final", {"step": self.cfg.train.steps, **final})
        return final

    def save_video(self, frames: list[np.ndarray] | None, fps: int) -> None:
        """video.mp4 of the filmed episode (None: rendering failed); a failed write is logged, the scores stand."""
        if frames is None:
            return
        try:
            self.folder.save_video(frames, fps)
        except OSError as e:
            log.error("seed %d: no video: cannot write %s (%s); free space there (the scores are kept)", self.seed,
                      self.folder.video_path(), e.strerror or e)


def check_finite(loss: float, seed: int, step: int, run: Run) -> None:
    """Stop on a NaN or inf loss: the checkpoint before it is kept, and a resumed run would reach it again."""
    if not np.isfinite(loss):
        raise NonFiniteLossError(f"seed {seed}: the loss became {loss} before step {step}. Start a new run with a "
                                 f"lower train.lr or train.grad_clip (resuming {run.name} would reach the same loss), "
                                 f"or check the dataset for bad values")


def check_finite_score(result: dict, seed: int, what: str) -> None:
    """Stop the seed (NonFiniteScoreError, one line with the cause) on an evaluation whose score is NaN or inf."""
    if not np.isfinite(result["score_mean"]):
        raise NonFiniteScoreError(
            f"seed {seed}: {what} scored {result['score_mean']} (mean return {result['return_mean']}): the policy's "
            f"actions or the env's rewards are not finite; check the dataset and eval.target_return, and start a new "
            f"run (a resume would score the same)")
