"""What bad input gets: one line that names the field or file and the fix; never a traceback, never silent
training on a value that cannot work, never a write into another run's folder."""
import os
import signal
import subprocess
import time

import h5py
import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import core
import report
from cfgs import schema
from cfgs.schema import ConfigError
from conftest import (
    CRASH_ENV,
    TINY,
    compose,
    copy_run,
    run_entry,
    run_script,
    start_script,
    wait_for_training,
    write_d4rl_file,
)
from plumbing import errors, launch, signals
from plumbing.record import NonFiniteLossError
from plumbing.runfolder import Run, RunError


def error_line(result):
    """The one line a failed command printed on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, f"exit {result.returncode}:\n{result.stderr}"
    return lines[0]


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=abc", "train.batch_size=abc; Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.steps=1.5", "train.steps=1.5; Value '1.5' of type 'float' could not be converted to Integer"),
    ("train.steps=true", "train.steps=true; Value 'True' of type 'bool' could not be converted to Integer"),
    ("eval.target_return=abc", "eval.target_return=abc; Value 'abc' of type 'str' could not be converted to Float"),
    ("seeds=[a]", "seeds=[a]; Value 'a' of type 'str' could not be converted to Integer"),
    ("trian.steps=3", "Could not override 'trian.steps'; Key 'trian' not in 'Config'"),
    ("env=ant", "In 'config': Could not find 'env/ant'; Available options in 'env': halfcheetah; hopper; walker2d"),
])
def test_a_value_of_the_wrong_type_is_named_by_hydra_in_one_line(override, message):
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        compose(override)
    line = errors.composition_error(err.value)
    assert line.startswith(message) and "\n" not in line and "To append" not in line


@pytest.mark.parametrize("override, message", [
    ("train.grad_clip=-1", "train.grad_clip=-1.0: must be > 0"),
    ("train.grad_clip=0", "train.grad_clip=0.0: must be > 0"),
    ("train.weight_decay=-1", "train.weight_decay=-1.0: must be >= 0"),
    ("train.lr=-1", "train.lr=-1.0: must be > 0"),
    ("train.steps=0", "train.steps=0: must be > 0"),
    ("train.batch_size=-4", "train.batch_size=-4: must be > 0"),
    ("train.aux_state_coef=-0.5", "train.aux_state_coef=-0.5: must be >= 0"),
    ("train.aux_rtg_coef=1 model.condition_on_return=false",
     "train.aux_rtg_coef=1.0: the next return-to-go cannot be learnt with model.condition_on_return=false"),
    ("train.precision=fp8", "train.precision=fp8: choose one of auto, fp32, bf16"),
    ("train.eval_every=7", "train.eval_every=7: must be a multiple of train.log_every=5"),
    ("eval.target_return=nan", "eval.target_return=nan: must be a finite number"),
    ("eval.target_return=inf", "eval.target_return=inf: must be a finite number"),
    ("eval.episodes=0", "eval.episodes=0: must be > 0"),
    ("model.n_layers=0", "model.n_layers=0: must be at least 1"),
    ("model.n_heads=3", "model.n_heads=3: must divide model.embed_dim=16"),
    ("model.dropout=1", "model.dropout=1.0: must be in [0, 1)"),
    ("model.implementation=models.Nope", "model.implementation=models.Nope: choose one of models.DecisionTransformer"),
    ("seeds=[-1]", "seeds=[-1]: give distinct seeds >= 0"),
    ("seeds=[]", "seeds=[]: give distinct seeds >= 0"),
    ("seeds=[1,1]", "seeds=[1, 1]: give distinct seeds >= 0"),
    ("device=gpu", "device=gpu: choose auto, cpu, cuda, cuda:<index> or mps"),
    ("buffer.dataset=mediocre", "buffer.dataset=mediocre: choose one of medium, medium-replay"),
    ("buffer.context_len=2000", "buffer.context_len=2000: must be at most the env's max_episode_len=100"),
    ("buffer.top_percent=0", "buffer.top_percent=0.0: must be in (0, 100]"),
    ("buffer.reward_scale=0", "buffer.reward_scale=0.0: must be > 0"),
    ("env.id=Hopper-v9", "env.id=Hopper-v9: not a gymnasium id of hopper: choose one of Hopper-v4, Hopper-v5"),
    ("env.id=Walker2d-v4", "env.id=Walker2d-v4: not a gymnasium id of hopper"),
    ("logger=[tensorboard]", "logger=['tensorboard']: choose from csv, tensorboard, wandb, with csv"),
    ("logger=[csv,mlflow]", "logger=['csv', 'mlflow']: choose from csv, tensorboard, wandb"),
    ("wandb.mode=dryrun", "wandb.mode=dryrun: choose online, offline or disabled, or null"),
])
def test_a_value_that_cannot_work_is_named_with_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        schema.check(compose(*override.split()))
    assert str(err.value).startswith(message)


def test_the_schema_defaults_are_the_values_in_cfgs_config_yaml():
    composed = compose(tiny=False)
    defaults = schema.typed({"env": composed.env})
    OmegaConf.resolve(defaults)
    assert composed == defaults


def test_the_command_line_prints_one_line_and_starts_nothing_on_a_wrong_type(tmp_path):
    result = run_entry("main.py", tmp_path / "run", "train.batch_size=abc", check=False)
    assert error_line(result).startswith("error: train.batch_size=abc;") and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a config Hydra cannot compose makes no folder"


def test_a_start_that_fails_before_training_leaves_no_run_folder_behind(hopper_file, tmp_path):
    result = run_script("main.py", *TINY, f"buffer.path={hopper_file}", "train.lr=-1", cwd=tmp_path)
    assert error_line(result) == "error: train.lr=-1.0: must be > 0"
    missing = run_script("main.py", *TINY, f"buffer.path={tmp_path}/none.hdf5", cwd=tmp_path)
    assert missing.returncode != 0 and "none.hdf5" in error_line(missing)
    assert not (tmp_path / "runs").exists()


def test_a_failed_start_in_the_folder_started_in_removes_only_its_own_log(hopper_file, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    result = run_script("main.py", *TINY, f"buffer.path={hopper_file}", "train.lr=-1", "hydra.run.chdir=false",
                        cwd=here)
    assert error_line(result) == "error: train.lr=-1.0: must be > 0"
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]


def test_a_mistyped_resume_path_creates_nothing(tmp_path):
    result = run_script("main.py", "resume=runs/typo", cwd=tmp_path, fresh=True)
    assert error_line(result) == ("error: resume=runs/typo: no run there (no config.yaml); give a run folder such "
                                  "as resume=runs/<date>/<time>")
    assert not (tmp_path / "runs").exists()


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "runs/2026-01-01/12-00-00")
    first, second = launch.run_folder(None), launch.run_folder(None)
    assert first == "runs/2026-01-01/12-00-00" and second == "runs/2026-01-01/12-00-00-1"
    assert (tmp_path / first).is_dir() and (tmp_path / second).is_dir()


def test_a_fresh_run_refuses_a_folder_that_holds_a_run_and_writes_nothing_there(tiny_run, tmp_path):
    run_dir, path = copy_run(tiny_run[0], tmp_path / "run"), tiny_run[1]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", "env=walker2d", check=False)
    assert error_line(result) == (f"error: hydra.run.dir={run_dir} holds a run already: continue it with "
                                  f"resume={run_dir}, or leave hydra.run.dir out for a new folder")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_data_outside_the_env_action_bounds_stops_the_run_without_advice_to_resume(tmp_path):
    path = write_d4rl_file(tmp_path / "scaled.hdf5")
    with h5py.File(path, "a") as f:
        f["actions"][...] = f["actions"][...] * 3  # as if not scaled to [-1, 1]
    result = run_entry("main.py", tmp_path / "run", f"buffer.path={path}", "seeds=[0]", check=False)
    line = error_line(result)
    assert "actions lie outside the env's action bounds [-1, 1], by up to" in line and "resume" not in line.lower()


@pytest.mark.parametrize("script", ["main.py", "main_mp.py"])
def test_a_nan_loss_is_not_advised_to_resume(hopper_file, tmp_path, script):
    result = run_entry(script, tmp_path, f"buffer.path={hopper_file}", "seeds=[0]", check=False,
                       env={**CRASH_ENV, "DT_CRASH": "0:nan"})
    line = error_line(result)
    assert "nan" in line.lower() and "train.lr" in line and "resume" not in line.lower()


def test_a_stop_between_log_steps_keeps_no_checkpoint_of_a_nan_loss(hopper_file, tmp_path, monkeypatch):
    steps, train_step = [], core.train_step
    def nan_at_step_3(*args):  # noqa: E306
        steps.append(len(steps) + 1)
        return {name: value * (float("nan") if len(steps) == 3 else 1) for name, value in train_step(*args).items()}
    monkeypatch.setattr(core, "train_step", nan_at_step_3)
    monkeypatch.setattr(signals, "stop_requested", lambda: "SIGTERM" if len(steps) >= 3 else None)
    run = Run(tmp_path)
    with pytest.raises(NonFiniteLossError, match="the loss became nan before step 3"):
        core.train(compose(f"buffer.path={hopper_file}"), 0, run)  # log steps: 5, 10, ...
    assert steps == [1, 2, 3] and run.seed(0).checkpoint_step() is None


def test_a_damaged_checkpoint_is_named_with_the_fix(hopper_file, tmp_path):
    run = Run(tmp_path)
    (tmp_path / "seed0").mkdir()
    (tmp_path / "seed0" / "last.pt").write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(RunError, match=r"seed0/last.pt cannot be read .*delete it to train seed 0 again from step 0"):
        core.train(compose(f"buffer.path={hopper_file}"), 0, run)


def test_a_shared_policy_file_that_would_run_code_is_refused(tmp_path):
    import torch
    torch.save({"env_id": "Hopper-v4", "payload": os.system}, tmp_path / "final.pt")  # a pickled function
    with pytest.raises(RunError, match="final.pt cannot be read"):
        core.load_policy(tmp_path / "final.pt")


def test_report_py_names_an_empty_summary(tmp_path):
    (tmp_path / "config.yaml").write_text("seeds: [0]\n")
    (tmp_path / "summary.json").write_text("")
    with pytest.raises(SystemExit, match=f"error: {tmp_path}/summary.json is empty or not JSON"):
        report.main([str(tmp_path), "--out", str(tmp_path / "report")])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_current_step_and_tells_how_to_resume(long_run, tmp_path, sig):
    whole, longer = long_run
    run_dir = tmp_path / "stopped"
    proc = start_script("main.py", *TINY, f"hydra.run.dir={run_dir}", *longer, new_session=True)
    wait_for_training(run_dir)
    os.killpg(proc.pid, sig)  # as Ctrl-C does: to the whole process group
    _, stderr = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    line = error_line(result)
    assert proc.returncode == 128 + sig and f"stopped by {sig.name} at step" in line
    assert line.endswith(f"Resume with: python main.py resume={run_dir}")
    step = int(line.split(" at step ")[1].split(";")[0])
    import torch
    assert torch.load(run_dir / "seed0" / "last.pt", weights_only=True)["progress"]["step"] == step
    run_entry("main.py", tmp_path / "unused", f"resume={run_dir}")
    assert f"seed 0: resumed at step {step}" in (tmp_path / "unused" / "main.log").read_text()
    for name in ["train.csv", "eval.csv"]:
        assert (run_dir / "seed0" / name).read_text() == (whole / "seed0" / name).read_text(), name


def test_main_mp_passes_sigterm_on_to_its_seeds_which_checkpoint(hopper_file, tmp_path):
    run_dir = tmp_path / "stopped"
    proc = start_script("main_mp.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}", "seeds=[0,1]",
                        "train.steps=100000", "train.eval_every=100000", "train.checkpoint_every=5")
    wait_for_training(run_dir)
    proc.send_signal(signal.SIGTERM)  # to the parent only, as `kill` does
    _, stderr = proc.communicate(timeout=120)
    line = error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr))
    assert proc.returncode == 128 + signal.SIGTERM
    assert line == (f"interrupted: seeds [0, 1] stopped with a checkpoint. "
                    f"Resume with: python main_mp.py resume={run_dir}")
    for seed in (0, 1):
        assert "stopped by SIGTERM at step" in (run_dir / f"seed{seed}" / "train.log").read_text()


def test_hydra_run_chdir_false_runs_in_the_folder_started_in_unless_a_folder_is_named():
    assert launch.assignment_chdir(["seeds=[0]", "hydra.run.chdir=false"], "/a b/it's") == [
        "seeds=[0]", "hydra.job.chdir=false", "hydra.run.dir='/a b/it\\'s'"]
    assert launch.assignment_chdir(["hydra.run.chdir=true"], "/x") == ["hydra.job.chdir=true"]
    for named in ("hydra.run.dir=elsewhere", "resume=runs/x"):
        assert launch.assignment_chdir([named, "hydra.run.chdir=false"], "/x") == [named, "hydra.job.chdir=false"]


@pytest.mark.parametrize("script", ["main.py", "main_mp.py"])
def test_an_error_is_printed_once_on_stderr_and_kept_in_the_log(script, hopper_file, tmp_path):
    result = run_entry(script, tmp_path / "run", f"buffer.path={hopper_file}", "train.lr=-1", check=False)
    assert error_line(result) == "error: train.lr=-1.0: must be > 0" and "must be > 0" not in result.stdout
    assert "error: train.lr=-1.0: must be > 0" in (tmp_path / "run" / "main.log").read_text()


@pytest.mark.parametrize("script", ["main.py", "main_mp.py"])
@pytest.mark.parametrize("override, env, told", [
    ("seeds=[4294967296]", {}, "give seeds=[...] between 0 and 2**32 - 1"),
    ("env.id=Hopper-v3", {}, "change env.id"),  # gymnasium warns first that v3 is out of date; found at the start
])
def test_a_failure_no_resume_fixes_says_what_to_change_not_resume(script, override, env, told, hopper_file, tmp_path):
    result = run_entry(script, tmp_path, f"buffer.path={hopper_file}", "seeds=[0]", override, check=False, env=env)
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and told in line and line.startswith(("error: ", "seeds [")), result.stderr
    assert "Resume" not in result.stderr and "Traceback" not in result.stderr


def test_a_start_that_cannot_render_leaves_one_line_and_no_run_folder(tmp_path):
    (tmp_path / "data").mkdir()
    write_d4rl_file(tmp_path / "data" / "hopper_medium-v2.hdf5")
    result = run_script("main.py", *TINY, "eval.video=true", cwd=tmp_path,
                        env={"MUJOCO_GL": "invalid", "D4RL_DATASET_DIR": str(tmp_path / "data")})
    line = error_line(result)
    assert "MUJOCO_GL=invalid" in line and "MUJOCO_GL=egl" in line and not (tmp_path / "runs").exists()


class FakeWandbError(Exception):
    __module__ = "wandb.errors.errors"


@pytest.mark.parametrize("error, told", [
    (MemoryError(), "out of memory: lower train.batch_size"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"), "out of memory"),
    (FakeWandbError("No API key configured. Use `wandb login` to log in."), "WANDB_MODE=offline"),
])
def test_out_of_memory_and_wandb_without_a_key_say_what_to_change(error, told):
    assert told in errors.advice(error)
    assert errors.advice(RuntimeError("injected crash in seed 0")) is None  # a crash a resume may get past
