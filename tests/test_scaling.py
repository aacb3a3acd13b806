"""Beyond one run: a study (Hydra's multirun) and the report of its folder, TensorBoard and W&B logging, -v5 envs on
D4RL files. No network: offline wandb."""
import importlib.util
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import core
import report
import utils
from cfgs import schema
from conftest import compose, multirun, run_entry
from plumbing.runfolder import Tracker


def test_a_study_runs_its_jobs_into_run_folders_under_runs_and_the_report_reads_its_folder(data_dir):
    result = multirun(data_dir, "buffer.top_percent=50,100")
    assert result.returncode == 0, result.stderr
    (sweep,) = data_dir.glob("runs/*/*-sweep")
    percents = sorted(OmegaConf.load(sweep / job / "config.yaml").buffer.top_percent for job in ("0", "1"))
    assert percents == [50.0, 100.0] and all((sweep / job / "seed0" / "final.json").exists() for job in ("0", "1"))
    assert not (data_dir / "multirun").exists()

    report.main([str(sweep), "--out", str(data_dir / "study")])  # the sweep folder stands for its jobs 0, 1
    study = (data_dir / "study.md").read_text().split("# Appendix: every run")[1]
    assert "| DT, all data |" in study and "| DT, top 50% |" in study
    if importlib.util.find_spec("pypdf"):
        from pypdf import PdfReader
        pdf = " ".join(page.extract_text() for page in PdfReader(data_dir / "study.pdf").pages)
        assert "Appendix" in pdf and "DT, top 50%" in pdf and str(data_dir) not in pdf.replace("\u200b", "")

    again = multirun(data_dir, f"hydra.sweep.dir={sweep}", "buffer.top_percent=30")  # another config, same folder
    assert again.returncode != 0 and "holds a run already" in again.stderr
    assert OmegaConf.load(sweep / "0" / "config.yaml").buffer.top_percent == 50.0


def test_tensorboard_and_offline_wandb_get_the_csvs_metrics_and_the_config(hopper_file, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_entry("main.py", tmp_path / "run", f"buffer.path={hopper_file}", "seeds=[0]", "logger=[csv,tensorboard,wandb]",
              env={"WANDB_SILENT": "true", "WANDB_MODE": "offline"})  # W&B's variable wins over the config
    seed_dir = tmp_path / "run" / "seed0"
    train, evals = utils.read_csv(seed_dir / "train.csv"), utils.read_csv(seed_dir / "eval.csv")

    events = EventAccumulator(str(seed_dir))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(train["step"]) and np.allclose([e.value for e in loss], train["loss"])
    assert [e.value for e in events.Scalars("eval/score_mean")] == pytest.approx(list(evals["score_mean"]))
    assert "final/score_mean" in events.Tags()["scalars"] and "config/text_summary" in events.Tags()["tensors"]

    (wandb_file,) = seed_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_file.read_bytes()
    for key in (b"train/loss", b"train/lr", b"eval/score_mean", b"final/score_mean", b"top_percent"):
        assert key in records, key


def test_the_wandb_environment_variables_win_over_the_configs_defaults(monkeypatch, tmp_path):
    inits = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: inits.append(kw)))
    monkeypatch.setenv("WANDB_MODE", "offline")  # read by W&B itself: the config's mode is null
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    monkeypatch.setenv("WANDB_ENTITY", "their-team")
    Tracker(compose("logger=[csv,wandb]"), tmp_path, "run/seed0", 0)
    assert (inits[0]["project"], inits[0]["entity"], inits[0]["mode"]) == ("theirs", "their-team", None)
    Tracker(compose("logger=[csv,wandb]", "wandb.project=mine", "wandb.mode=online"), tmp_path, "run/seed0", 0)
    assert (inits[1]["project"], inits[1]["mode"]) == ("mine", "online"), "the command line wins over both"


def test_a_d4rl_file_reads_into_a_v5_env_whose_spaces_match(hopper_file):
    cfg = compose(f"buffer.path={hopper_file}", "env.id=Hopper-v5")
    schema.check(cfg)
    env = gym.make("Hopper-v5")
    data = core.load_data(cfg, env)
    model = core.build_model(cfg, data, env)
    returns = core.rollout(model.eval(), core.RolloutSpec("Hopper-v5", 2, 0, 3600, 1000)).returns
    assert data.num_trajectories == 6 and returns.shape == (2,)
