"""End to end: main.py and main_mp.py on a tiny dataset write every artifact; faults lose nothing."""
import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import core
import models
import utils
from cfgs import schema
from conftest import CRASH_ENV, ROOT, TINY, compose, copy_run, run_entry, run_script, start_script
from plumbing import runfolder
from plumbing.record import NonFiniteLossError
from plumbing.runfolder import Run

SEED_FILES = ["train.csv", "eval.csv", "last.pt", "best.pt", "final.pt", "final.json"]


def read(path):
    return path.read_text()


def test_main_writes_config_log_figure_summary_and_seed_artifacts(tiny_run):
    run_dir, _ = tiny_run
    for name in ["config.yaml", "main.log", "results.png", "summary.json"]:
        assert (run_dir / name).stat().st_size > 0, name
    for seed in (0, 1):
        for name in SEED_FILES:
            assert (run_dir / f"seed{seed}" / name).stat().st_size > 0, f"seed{seed}/{name}"
    assert "normalized score" in read(run_dir / "main.log")


def test_metrics_hold_every_logged_step_and_eval(tiny_run):
    run_dir, _ = tiny_run
    train = read(run_dir / "seed0" / "train.csv").splitlines()
    assert train[0] == "step,loss,lr" and [r.split(",")[0] for r in train[1:]] == ["5", "10", "15", "20"]
    evals = read(run_dir / "seed0" / "eval.csv").splitlines()
    assert evals[0].startswith("step,return_mean") and [r.split(",")[0] for r in evals[1:]] == ["10", "20"]


def test_each_logged_lr_is_the_one_its_step_used_and_a_short_last_interval_is_logged(hopper_file, tmp_path):
    core.train(compose(f"buffer.path={hopper_file}", "train.steps=12", "train.warmup_steps=10"), 0, Run(tmp_path))
    rows = [r.split(",") for r in read(tmp_path / "seed0" / "train.csv").splitlines()[1:]]
    assert [(int(step), float(lr)) for step, _, lr in rows] == [(5, 0.5e-4), (10, 1e-4), (12, 1e-4)]  # lr * step / 10


def test_the_assignments_hydra_run_chdir_false_puts_the_runs_files_in_the_folder_started_in(hopper_file, tmp_path):
    here = tmp_path / "here"  # the run's files alone
    here.mkdir()
    run_script("main.py", *TINY, f"buffer.path={hopper_file}", "seeds=[0]", "train.steps=5", "hydra.run.chdir=false",
               cwd=here, check=True)
    assert not (here / "runs").exists()
    for name in ["config.yaml", "main.log", "results.png", "summary.json", "seed0/final.json"]:
        assert (here / name).is_file(), name
    assert OmegaConf.load(here / "config.yaml").train.steps == 5
    again = run_script("main.py", *TINY, f"buffer.path={hopper_file}", "seeds=[0]", "hydra.run.chdir=false",
                       cwd=here)
    assert again.returncode != 0 and "holds a run already" in again.stderr
    assert "leave hydra.run.chdir=false out" in again.stderr and "hydra.run.dir" not in again.stderr, "as typed"
    assert OmegaConf.load(here / "config.yaml").train.steps == 5

    written = [p.relative_to(here).as_posix() for p in here.rglob("*") if p.is_file()]
    if (ROOT / ".git").exists():  # the same run in the project's root leaves `git status` clean
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"], input="\n".join(
            written), capture_output=True, text=True).stdout.split()
        assert sorted(ignored) == sorted(written)


def test_checkpoint_alone_evaluates_and_refuses_another_env(tiny_run):
    run_dir, _ = tiny_run
    model = core.load_policy(run_dir / "seed0" / "final.pt", env_id="Hopper-v4")
    assert model.state_mean.shape == (11,) and not model.training
    cfg = OmegaConf.load(run_dir / "config.yaml")
    result = core.evaluate(model, core.RolloutSpec.of_run(cfg, 1, 0), (cfg.env.ref_min_score, cfg.env.ref_max_score))
    assert np.isfinite(result["score_mean"])
    with pytest.raises(core.ConfigError, match="trained on Hopper-v4, not Walker2d-v4"):
        core.load_policy(run_dir / "seed0" / "final.pt", env_id="Walker2d-v4")


def test_main_keeps_going_after_a_crashed_seed_and_advises_to_resume(hopper_file, tmp_path):
    result = run_entry("main.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0,1]", check=False,
                       env={**CRASH_ENV, "DT_CRASH": "0:raise"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and lines == [f"seeds [0] failed; see {tmp_path}/main.log. Resume with: "
                                                f"python main.py resume={tmp_path}"]
    assert (tmp_path / "seed1" / "final.json").exists() and json.loads(read(tmp_path / "summary.json"))["seeds"] == [1]
    assert "injected crash in seed 0" in read(tmp_path / "main.log") and lines[0] in read(tmp_path / "main.log")
    assert "ERROR" not in result.stdout and "failed" not in result.stdout  # printed once: on stderr


def test_resume_after_sigkill_equals_an_uninterrupted_run(long_run, tmp_path):
    whole, longer = long_run
    run_dir = tmp_path / "killed"
    proc = start_script("main.py", *TINY, f"hydra.run.dir={run_dir}", *longer)
    train_csv = run_dir / "seed0" / "train.csv"
    deadline = time.time() + 120
    while not (train_csv.exists() and len(read(train_csv).splitlines()) > 5) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert time.time() < deadline and not (run_dir / "seed0" / "final.json").exists(), "killed mid-way"
    step = torch.load(run_dir / "seed0" / "last.pt", weights_only=True)["progress"]["step"]
    run_entry("main.py", tmp_path / "unused", f"resume={run_dir}")
    assert step > 0 and f"seed 0: resumed at step {step}" in read(tmp_path / "unused" / "main.log")  # not retrained
    for name in ["train.csv", "eval.csv"]:
        assert read(run_dir / "seed0" / name) == read(whole / "seed0" / name), name


def test_resume_with_more_seeds_keeps_the_finished_one_and_trains_the_new_one_as_from_scratch(tiny_run, tmp_path):
    """Also: seeds=[1] adds seed 1 to the run's seeds, and an old config gains the newer keys' defaults."""
    reference_dir, _ = tiny_run  # seeds 0 and 1 in one run
    run_dir = copy_run(reference_dir, tmp_path / "run")
    shutil.rmtree(run_dir / "seed1")
    for name in ("summary.json", "results.png"):  # as a run of seed 0 alone leaves them: written again below
        (run_dir / name).unlink()
    final0 = read(run_dir / "seed0" / "final.json")
    # config.yaml of seed 0 alone, as older code wrote it: no defaults list, buffer.file or model.implementation
    config = run_dir / "config.yaml"
    lines = [line for line in read(config).splitlines(keepends=True)[4:]
             if not line.startswith(("  file:", "  implementation:"))]
    recorded = OmegaConf.load(config).train.precision  # what auto chose on this machine: fp32 or bf16
    old = "".join(lines)
    assert "seeds:\n- 0\n- 1\n" in old
    config.write_text(old.replace("seeds:\n- 0\n- 1\n", "seeds:\n- 0\n"))
    result = run_entry("main.py", tmp_path / "unused", f"resume={run_dir}", "seeds=[1]", "train.steps=5")
    assert read(run_dir / "seed0" / "final.json") == final0
    assert read(run_dir / "seed1" / "train.csv") == read(reference_dir / "seed1" / "train.csv")
    assert json.loads(read(run_dir / "summary.json"))["seeds"] == [0, 1]
    assert "seeds:\n- 0\n- 1\n" in read(config) and "implementation: models.DecisionTransformer" in read(config)
    assert f"precision: {recorded}" in read(config)
    assert "train:\n  steps: 20\n" in read(config), "only seeds= overrides a resumed run"
    assert "ignoring" in result.stdout + result.stderr and "train.steps=5" in result.stdout + result.stderr


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(hopper_file, tmp_path, monkeypatch):
    cfg = compose(f"buffer.path={hopper_file}")
    calls = {"n": 0}
    masked_mse = core.masked_mse

    def loss_that_breaks_at_step_12(*args):
        calls["n"] += 1
        return masked_mse(*args) * (float("nan") if calls["n"] >= 12 else 1.0)

    monkeypatch.setattr(core, "masked_mse", loss_that_breaks_at_step_12)
    with pytest.raises(NonFiniteLossError, match="the loss became nan before step 15"):
        core.train(cfg, 0, Run(tmp_path))
    state = torch.load(tmp_path / "seed0" / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_report_py_reads_a_run_folder_made_by_main_py(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    result = run_script("report.py", str(run_dir), "--out", str(tmp_path / "report"), fresh=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    md = (tmp_path / "report.md").read_text()
    scores = [seed["score_mean"] for seed in summary["per_seed"]]  # the report's spread: the sample std (ddof = 1)
    assert f"| {np.mean(scores):.1f}" + (f" ± {np.std(scores, ddof=1):.1f}" if len(scores) > 1 else "") + " |" in md
    assert "report_runs0.png)" in md, "the run's curves are in the report"
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")


# A refactor keeps the numbers: 90006b3 (before cfgs/schema.py and the Run class) to f385ba1 gave the same CSVs;
# b0c8c03 (models.LayerNorm) to 87f61d6..0e89267's two floors, named losses and plumbing/record.py the same again;
# then torch's fused LayerNorm returned (666eec1), changing the rounding on purpose, so the pin moved to that commit.
PRE_REFACTOR = "666eec1"


def test_the_refactor_left_the_metrics_byte_identical(hopper_file, tmp_path):
    """The code since PRE_REFACTOR changed no number: the old code's tiny run writes the same CSVs."""
    old = tmp_path / "old"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PRE_REFACTOR], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {PRE_REFACTOR} is not in this clone ({archive.stderr.decode().strip()})")
    old.mkdir()
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    same = [f"buffer.path={hopper_file}", "seeds=[0]", "env.max_episode_len=1000", "train.precision=fp32"]
    run_entry("main.py", tmp_path / "new", *same)
    run_script(old / "main.py", *TINY, f"hydra.run.dir={tmp_path / 'run'}", *same, cwd=old, check=True, fresh=True)
    for name in ["train.csv", "eval.csv"]:
        assert read(tmp_path / "run" / "seed0" / name) == read(tmp_path / "new" / "seed0" / name), name


def test_a_runs_own_config_yaml_runs_again_into_identical_metrics(tiny_run, tmp_path):
    """Determinism: the same config and seed on the same machine give the same curves and final score."""
    run_dir, again = tiny_run[0], tmp_path / "again"
    run_script("main.py", "--config-path", str(run_dir), "--config-name", "config", f"hydra.run.dir={again}",
               "seeds=[0]", check=True, fresh=True)  # another interpreter: its hash seed too
    for name in ["train.csv", "eval.csv"]:
        assert read(again / "seed0" / name) == read(run_dir / "seed0" / name), name
    first, second = (json.loads(read(d / "seed0" / "final.json")) for d in (run_dir, again))
    assert {k: v for k, v in first.items() if "seconds" not in k} == \
        {k: v for k, v in second.items() if "seconds" not in k}


def test_each_auxiliary_loss_is_logged_in_its_own_column(hopper_file, tmp_path):
    core.train(compose(f"buffer.path={hopper_file}", "train.steps=10", "train.aux_state_coef=0.5",
                       "train.aux_rtg_coef=2"), 0, Run(tmp_path))
    rows = utils.read_csv(tmp_path / "seed0" / "train.csv")
    assert list(rows) == ["step", "loss", "action_mse", "state_mse", "rtg_mse", "lr"]
    np.testing.assert_allclose(rows["loss"], rows["action_mse"] + 0.5 * rows["state_mse"] + 2 * rows["rtg_mse"],
                               rtol=1e-5)


class NextRewardDT(models.DecisionTransformer):
    """docs/extending.md's example: the DT with one more head, reading the a_t tokens as the next-step heads do."""

    def __init__(self, config, **normalization):
        super().__init__(config, **normalization)
        self.predict_reward = torch.nn.Linear(config.embed_dim, 1)

    def forward(self, *inputs, predict_next=False):
        tokens = []  # the a_t tokens, as predict_return reads them
        hook = self.predict_return.register_forward_hook(lambda module, args, out: tokens.append(args[0]))
        preds = super().forward(*inputs, predict_next=predict_next)
        hook.remove()
        self.last = {**preds, "next_reward": self.predict_reward(tokens[0])} if predict_next else preds
        return self.last


def test_a_new_loss_reaches_the_csv_the_tracker_and_the_figure_from_its_name_alone(hopper_file, tmp_path,
                                                                                  monkeypatch):
    """A toy loss added as docs/extending.md says (a head, one entry of core.losses, its coefficient in the config)
    gets its train.csv column, its tracker key and its curve in results.png without any other list to update."""
    original_losses = core.losses

    def losses_with_toy(model, batch, train_cfg, precision):
        named = original_losses(model, batch, train_cfg, precision)
        toy = core.masked_mse(model.last["next_reward"][:, :-1], batch[2][:, 1:], batch[4][:, 1:])
        return {**named, "loss": named["loss"] + train_cfg.aux_toy_coef * toy, "toy_mse": toy}

    monkeypatch.setitem(models.MODELS, "models.NextRewardDT", NextRewardDT)
    monkeypatch.setattr(core, "losses", losses_with_toy)
    logged, figures = [], []
    monkeypatch.setattr(runfolder.Tracker, "log", lambda self, section, row: logged.append((section, dict(row))))
    monkeypatch.setattr(utils, "save_png", lambda fig, path, dpi=110: figures.append(fig))
    cfg = OmegaConf.create(OmegaConf.to_container(compose(f"buffer.path={hopper_file}", "train.aux_state_coef=1")))
    cfg.model.implementation, cfg.train.aux_toy_coef = "models.NextRewardDT", 0.5  # as if in cfgs/
    core.train(cfg, 0, Run(tmp_path))
    assert list(utils.read_csv(tmp_path / "seed0" / "train.csv")) == ["step", "loss", "action_mse", "state_mse",
                                                                       "toy_mse", "lr"]
    assert {"toy_mse", "state_mse"} <= {k for section, row in logged if section == "train" for k in row}
    loss_panel = figures[-1].axes[1]
    assert "toy_mse (mean of 1 seed)" in loss_panel.get_legend_handles_labels()[1]


def test_a_short_run_warms_up_over_its_length_and_says_so(hopper_file, tmp_path):
    run_entry("main.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0]", "train.warmup_steps=1000")
    assert "train.warmup_steps=1000 capped at train.steps=20" in read(tmp_path / "main.log")
    assert OmegaConf.load(tmp_path / "config.yaml").train.warmup_steps == 20
    assert utils.read_csv(tmp_path / "seed0" / "train.csv")["lr"][-1] == pytest.approx(1e-4)


def test_the_smoke_run_writes_a_whole_run_for_every_seed(hopper_file, tmp_path):
    run_script("main.py", "experiment=smoke", f"buffer.path={hopper_file}", f"hydra.run.dir={tmp_path}",
               "eval.video=false", check=True)
    assert json.loads(read(tmp_path / "summary.json"))["seeds"] == [0, 1, 2]
    assert all((tmp_path / f"seed{s}" / name).exists() for s in (0, 1, 2) for name in SEED_FILES)


def test_a_model_swapped_through_the_config_trains_evaluates_and_exports(hopper_file, tmp_path):
    from tools import export
    cfg = compose(f"buffer.path={hopper_file}", "model.implementation=models.ReferenceDT")
    final = core.train(cfg, 0, Run(tmp_path))
    policy = core.load_policy(tmp_path / "seed0" / "final.pt")
    assert isinstance(policy, models.ReferenceDT) and np.isfinite(final["score_mean"])
    pytest.importorskip("onnxscript")  # the export's optional tools (requirements-extra.txt)
    assert len(export.export_policy(policy, export.run_facts(policy, cfg))) > 0


def test_every_gallery_config_and_policy_loads_without_migration_shims():
    runs = [run for run in map(Run, sorted((ROOT / "gallery").iterdir())) if run.holds_run()]
    policies = [(run, run.seed(seed).policy_path("final")) for run in runs for seed in run.seeds()]
    assert len(runs) > 10 and len([path for _, path in policies if path.exists()]) > 10
    for run, path in policies:
        cfg = run.config()  # typed: a key of older code would fail here
        if path.exists():
            assert not core.load_policy(path, env_id=cfg.env.id).training


def test_with_held_out_trajectories_each_eval_logs_the_action_error_on_them_and_on_training_ones(hopper_file, tmp_path):
    cfg = compose("buffer.holdout=0.5", f"buffer.path={hopper_file}")
    schema.check(cfg)
    core.train(cfg, 0, Run(tmp_path))
    evals = utils.read_csv(tmp_path / "seed0" / "eval.csv")
    for column in ("fit_action_mse", "holdout_action_mse"):
        assert len(evals[column]) == len(evals["step"]) and (evals[column] > 0).all() and np.isfinite(evals[column]).all()
