"""The fault battery of issue 30, black box: the entry points on tiny fixture datasets and tiny configs meet shared
configs that name code, a second process on a run folder, orphaned seed processes, failing and stopped jobs of a
study, values whose results cannot be finite, a dataset file changed under a run, folders holding what a run writes,
and writes that fail. Each ends in one line and writes nothing it should not."""
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import pytest
import torch
from omegaconf import OmegaConf

from conftest import (
    CRASH_ENV,
    TINY,
    copy_run,
    multirun,
    run_entry,
    run_script,
    start_script,
    wait_for_training,
    write_d4rl_file,
)


def error_line(result):
    """The one line a failed command printed on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, f"exit {result.returncode}:\n{result.stderr}"
    return lines[0]


LONG = ["train.steps=100000", "train.eval_every=100000", "train.checkpoint_every=5"]


# 1. Configs are data, not code

def crafted_configs(marker):
    """(what is added to a run's config.yaml, as a plain tree) -> each names code or a key the schema lacks."""
    make_marker = {"_target_": "os.makedirs", "name": str(marker)}
    return {
        "hydra.callbacks": {"hydra": {"callbacks": {"evil": make_marker}}},
        "_target_ in a section": {"model": {"_target_": "os.makedirs", "name": str(marker)}},
        "a logging factory": {"hydra": {"job_logging": {"version": 1, "handlers": {
            "evil": {"()": "os.makedirs", "name": str(marker)}}}}},
        "an unknown key": {"trian": {"steps": 3}},
    }


@pytest.mark.parametrize("kind", list(crafted_configs(Path("x"))))
def test_a_shared_config_that_names_code_or_unknown_keys_is_refused_and_writes_nothing(tiny_run, tmp_path, kind):
    marker, shared = tmp_path / "marker", tmp_path / "shared"
    shared.mkdir()
    config = OmegaConf.merge(OmegaConf.load(tiny_run[0] / "config.yaml"), crafted_configs(marker)[kind])
    (shared / "config.yaml").write_text(OmegaConf.to_yaml(config))
    result = run_script("main.py", "--config-path", str(shared), "--config-name", "config",
                        f"hydra.run.dir={tmp_path / 'new'}", "seeds=[0]")
    line = error_line(result)
    assert str(shared / "config.yaml") in line and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "new").exists()


def test_a_command_line_override_that_names_code_is_refused(hopper_file, tmp_path):
    marker = tmp_path / "marker"
    result = run_script("main.py", *TINY, f"buffer.path={hopper_file}", f"hydra.run.dir={tmp_path / 'new'}",
                        "+hydra.callbacks.evil._target_=os.makedirs", f"+hydra.callbacks.evil.name={marker}")
    assert "names code" in error_line(result) and not marker.exists() and not (tmp_path / "new").exists()


def test_resuming_a_run_whose_saved_config_names_code_is_refused(tiny_run, tmp_path):
    run_dir, marker = copy_run(tiny_run[0], tmp_path / "run"), tmp_path / "marker"
    config = OmegaConf.load(run_dir / "config.yaml")
    config.env.assignment_bar = {"_target_": "os.makedirs", "name": str(marker)}
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    line = error_line(run_script("main.py", f"resume={run_dir}", "seeds=[0,1,2]"))
    assert "_target_" in line and not marker.exists()
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != "main.log"} == \
        {p: t for p, t in before.items() if p.name != "main.log"}


# 2. One process per run folder

def test_a_second_process_on_a_training_run_stops_naming_the_holders_pid(hopper_file, tmp_path):
    run_dir = tmp_path / "run"
    first = start_script("main.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}", "seeds=[0]",
                         *LONG)
    wait_for_training(run_dir)
    second = run_entry("main.py", tmp_path / "unused", f"resume={run_dir}", check=False)
    line = error_line(second)
    assert f"pid {first.pid}" in line and str(run_dir) in line
    assert first.poll() is None, "the second process stopped the first"
    first.kill()
    fd = os.open(run_dir, os.O_RDONLY)  # a killed holder leaves no stale lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_second_resume_of_a_resuming_run_stops(hopper_file, tmp_path):
    run_dir = tmp_path / "run"
    run_entry("main.py", run_dir, f"buffer.path={hopper_file}", "seeds=[0]", "train.steps=10")
    first = start_script("main.py", f"resume={run_dir}", "seeds=[0,1]", f"hydra.run.dir={tmp_path / 'log1'}")
    deadline = time.time() + 120
    while not (run_dir / "seed1" / "train.csv").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if first.poll() is not None:
        pytest.skip("the first resume ended before the second started")
    line = error_line(run_script("main.py", f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'log2'}"))
    assert f"pid {first.pid}" in line
    first.kill()


def children(pid):
    """The pids of the live child processes of pid (Linux /proc)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def alive(pid):
    """Is pid a running (not ended, not zombie) process?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_main_mp_seed_processes_die_with_their_parent(hopper_file, tmp_path):
    run_dir = tmp_path / "run"
    parent = start_script("main_mp.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}",
                          "seeds=[0,1]", *LONG)
    wait_for_training(run_dir)
    seeds = [p for p in children(parent.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(seeds) == 2
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(60)
    assert not left_running(seeds), "seed processes went on after their parent's kill -9"


def left_running(pids, timeout=60):
    """Those of pids still running after `timeout` seconds, killed then (none outlives the test)."""
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


# 4. A study survives its jobs

def lines(text):
    """The lines of a command's output that are not blank."""
    return [line for line in text.splitlines() if line.strip()]


def sweep_of(data_dir):
    """The one sweep folder of a multirun in data_dir, as its lines name it (relative to data_dir)."""
    (sweep,) = data_dir.glob("runs/*/*-sweep")
    return sweep.relative_to(data_dir)


def wait_for_checkpoints(study, data_dir, jobs, timeout=180):
    """Until `jobs` jobs of the running study in data_dir have a checkpoint."""
    deadline = time.time() + timeout
    while len(list(data_dir.glob("runs/*/*-sweep/*/seed0/last.pt"))) < jobs:
        assert study.poll() is None and time.time() < deadline, study.communicate()
        time.sleep(0.05)


FAILING_JOB = {  # job 0 fails (refused at start, or its seed stops on a NaN loss), job 1 is healthy
    "refused": ({}, ["train.lr=-1,0.0001"], "train.lr=-1.0: must be > 0"),
    "nan": ({**CRASH_ENV, "DT_CRASH": "1:nan"}, ["seeds=[1],[0]"], "the loss became nan"),
}


@pytest.mark.parametrize("failure", list(FAILING_JOB))
def test_a_failing_job_neither_stops_nor_kills_the_other_jobs(data_dir, failure):
    env, sweep_overrides, cause = FAILING_JOB[failure]
    result = multirun(data_dir, *sweep_overrides, env=env)
    (line,) = lines(result.stderr)
    sweep = sweep_of(data_dir)
    assert result.returncode == 1
    assert line.startswith(f"{sweep / '0'}: ") and cause in line and "Traceback" not in result.stderr
    healthy = data_dir / sweep / "1"
    assert json.loads((healthy / "summary.json").read_text())["seeds"] == [0]
    assert (healthy / "seed0" / "final.json").exists()


def test_after_a_stop_every_unfinished_job_is_told_how_to_resume(data_dir):
    study = multirun(data_dir, *LONG, "buffer.top_percent=50,100", wait=False)
    wait_for_checkpoints(study, data_dir, 1)  # job 0's: the jobs run one after another
    study.send_signal(signal.SIGTERM)
    _, err = study.communicate(timeout=300)
    sweep = sweep_of(data_dir)
    assert study.returncode == 128 + signal.SIGTERM and len(lines(err)) == 2, err
    for job, line in zip(("0", "1"), lines(err)):
        assert line.startswith(f"{sweep / job}: interrupted: ") and line.endswith(
            f"Resume with: python main.py resume={sweep / job}")
        assert (data_dir / sweep / job / "seed0" / "last.pt").exists()


# 5. Values whose results cannot be finite or meaningful: refused before training, naming the field and bound

@pytest.mark.parametrize("override, field", [
    ("eval.target_return=1e30", "eval.target_return=1e+30"),
    ("eval.target_return=-1e30", "eval.target_return=-1e+30"),
    ("buffer.reward_scale=1e-30", "eval.target_return="),
    ("env.max_episode_len=3000", "env.max_episode_len=3000: at most 1000"),
])
def test_a_value_whose_results_cannot_be_meaningful_is_refused_before_training(hopper_file, tmp_path, override,
                                                                              field):
    result = run_entry("main.py", tmp_path / "run", f"buffer.path={hopper_file}", "seeds=[0]", override,
                       check=False)
    line = error_line(result)
    assert field in line and "Resume with" not in line
    assert not (tmp_path / "run" / "seed0").exists()


def test_rewards_beyond_the_bound_are_refused_naming_it(tmp_path):
    path = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    with h5py.File(path, "r+") as f:
        f["rewards"][:] = 1e30
    line = error_line(run_entry("main.py", tmp_path / "run", f"buffer.path={path}", "seeds=[0]", check=False))
    assert "rewards up to" in line and "beyond the bound 10000" in line
    assert "train.lr" not in line and "Resume with" not in line


def test_evaluate_refuses_a_target_beyond_what_the_model_embeds(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    line = error_line(run_script("evaluate.py", f"run={run_dir}", "targets=[1e30]", "episodes=1"))
    assert "targets=1e+30" in line and not list(run_dir.glob("sweep_*"))


# 5. and issue 29 item 4: the data's identity in every run

def test_a_run_records_its_datasets_sha256_and_a_resume_on_a_changed_file_stops(tmp_path):
    path, run_dir = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5"), tmp_path / "run"
    run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", "train.steps=10")
    recorded = OmegaConf.load(run_dir / "config.yaml").buffer.sha256
    assert list(recorded) == [hashlib.sha256(path.read_bytes()).hexdigest()]
    write_d4rl_file(path, seed=1)  # the same name, other data
    line = error_line(run_script("main.py", f"resume={run_dir}", "seeds=[0,1]"))
    assert "changed since the run started" in line and str(path) in line and "Resume with" not in line
    assert not (run_dir / "seed1").exists()
    warned = run_script("evaluate.py", f"run={run_dir}", "targets=[100]", "episodes=1", check=True)
    assert "changed since the run started" in warned.stderr + warned.stdout


def test_each_read_of_the_data_is_checked_against_the_runs_recorded_hash(hopper_file):
    import buffer
    import core
    from conftest import compose
    from plumbing.sources import DatasetError
    cfg = compose(f"buffer.path={hopper_file}", f"buffer.files=[{hopper_file}]", f"buffer.sha256=[{'0' * 64}]")
    with pytest.raises(DatasetError, match="changed since the run started"):  # as a later seed of main.py reads it
        buffer.load_transitions(cfg, core.gym.make(cfg.env.id))


def test_a_file_edited_in_place_with_its_size_and_mtime_kept_stops_a_resume(tmp_path):
    path, run_dir = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5"), tmp_path / "run"
    run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", "train.steps=10")
    before = path.stat()
    with h5py.File(path, "r+") as f:  # as `cp -p` or `rsync -t` leave a file: other bytes, the same size and mtime
        f["rewards"][0] += 1
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    line = error_line(run_script("main.py", f"resume={run_dir}", "seeds=[0,1]"))
    assert "changed since the run started" in line and str(path) in line and not (run_dir / "seed1").exists()


def test_a_run_whose_file_moved_resumes_with_buffer_path_at_its_new_place(tmp_path):
    path, run_dir = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5"), tmp_path / "run"
    run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", "train.steps=10")
    moved = tmp_path / "moved" / path.name
    moved.parent.mkdir()
    path.rename(moved)
    line = error_line(run_script("main.py", f"resume={run_dir}", "seeds=[0,1]"))
    assert f"resume={run_dir} buffer.path=<its new place>" in line
    other = write_d4rl_file(tmp_path / "other.hdf5", seed=1)
    assert "changed since the run started" in error_line(
        run_script("main.py", f"resume={run_dir}", f"buffer.path={other}", "seeds=[0,1]"))
    run_script("main.py", f"resume={run_dir}", f"buffer.path={moved}", "seeds=[0,1]", check=True)
    config = OmegaConf.load(run_dir / "config.yaml").buffer
    assert (config.path, list(config.files)) == (str(moved), [str(moved)])
    assert (run_dir / "seed1" / "final.json").exists()


def bad_layout(path, kind):
    """Rewrite one key of a D4RL file as `kind` stores it."""
    with h5py.File(path, "r+") as f:
        if kind == "complex observations":
            observations = f["observations"][:]
            del f["observations"]
            f["observations"] = observations + 1j
        elif kind == "byte-string observations":
            observations = f["observations"][:]
            del f["observations"]
            f["observations"] = observations.astype("S8")
        elif kind == "rewards as a group":
            rewards = f["rewards"][:]
            del f["rewards"]
            f.create_group("rewards")["data"] = rewards
        else:  # NaN rewards: found by the checks that were there before
            f["rewards"][3] = float("nan")


@pytest.mark.parametrize("kind, told", [("complex observations", "'observations' holds complex"),
                                        ("byte-string observations", "'observations' holds |S8"),
                                        ("rewards as a group", "'rewards' is an HDF5 group, not an array"),
                                        ("nan rewards", "'rewards' holds NaN")])
def test_a_bad_file_is_refused_for_what_it_is_before_a_run_folder_exists(tmp_path, kind, told):
    path = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    bad_layout(path, kind)
    result = run_script("main.py", *TINY, f"buffer.path={path}", "seeds=[0]", cwd=tmp_path)
    line = error_line(result)
    assert told in line and str(path) in line and "Resume with" not in line and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "a run folder was left behind"


# 3. Outputs never replace what the user did not name

@pytest.mark.parametrize("name", ["final", "results", "summary", "config", "train", "eval", "main"])
def test_evaluate_refuses_a_name_of_the_runs_own_files_and_writes_nothing(tiny_run, tmp_path, name):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != "evaluate.log"}
    line = error_line(run_script("evaluate.py", f"run={run_dir}", "targets=[100]", "episodes=1", f"name={name}"))
    assert f"name={name}" in line
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.name != "evaluate.log"} == before


def test_evaluate_never_replaces_a_stored_sweep_with_another_unless_told(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "targets=[100,200]", "episodes=1", check=True)
    stored = (run_dir / "sweep_final.csv").read_text()
    line = error_line(run_script("evaluate.py", f"run={run_dir}", "targets=[300]", "episodes=1"))
    assert "name=sweep_final" in line and "overwrite=true" in line
    assert (run_dir / "sweep_final.csv").read_text() == stored
    run_script("evaluate.py", f"run={run_dir}", "targets=[100,200]", "episodes=1", check=True)  # the same: reused
    run_script("evaluate.py", f"run={run_dir}", "targets=[300]", "episodes=1", "overwrite=true", check=True)
    assert (run_dir / "sweep_final.csv").read_text() != stored


def test_bench_py_replaces_no_results_unasked(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    line = error_line(run_script("tools/bench.py", "--steps", "1", "--out", str(out)))
    assert str(out) in line and "--force" in line and out.read_text() == "{}"


@pytest.mark.parametrize("named", ["hydra.run.dir=.", "hydra.run.chdir=false", "hydra.run.dir=<folder>"])
def test_a_run_refuses_a_folder_holding_what_a_run_writes_and_leaves_it_as_it_was(hopper_file, tmp_path, named):
    folder = tmp_path / "mine"
    (folder / "seed0").mkdir(parents=True)
    (folder / "results.png").write_bytes(b"my figure")
    (folder / "summary.json").write_text("{}")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    override = named.replace("<folder>", str(folder))
    result = run_script("main.py", *TINY, f"buffer.path={hopper_file}", "seeds=[0]", override,
                        cwd=tmp_path if "<folder>" in named else folder)
    line = error_line(result)
    assert "holds what a run writes (results.png, summary.json, seed0)" in line
    assert named.split("=")[0] in line and (named != "hydra.run.chdir=false" or "hydra.run.dir" not in line)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_resuming_a_finished_run_writes_nothing(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.rglob("*")}
    result = run_script("main.py", f"resume={run_dir}", "train.steps=50")
    assert result.returncode == 0 and "finished already" in result.stdout, result.stderr
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run_dir.rglob("*")} == before


def test_a_resume_removes_the_temporary_files_of_a_killed_write(long_run, tmp_path):
    run_dir = tmp_path / "run"
    run_entry("main.py", run_dir, *long_run[1], "train.steps=10")
    strays = [run_dir / ".config.yaml.k1ll3d.tmp", run_dir / "seed0" / ".last.pt.k1ll3d.tmp"]
    for path in strays:
        path.write_bytes(b"half")
    run_script("main.py", f"resume={run_dir}", "seeds=[0,1]", check=True)
    assert not any(path.exists() for path in strays)


# 6. Signals work to the end

SCORES = ("return_mean", "return_std", "score_mean", "score_std", "episodes")


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_during_the_final_evaluation_stops_it_and_a_resume_gives_the_same_scores(tiny_run, tmp_path, sig):
    run_dir, path = tmp_path / "run", tiny_run[1]
    result = run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", check=False,
                       env={**CRASH_ENV, "DT_SIGNAL": f"final_evaluation:{sig}"})  # as the final eval starts
    line = error_line(result)
    assert result.returncode == 128 + signal.Signals[sig]
    assert f"seed 0 stopped by {sig} during its final evaluation" in line and f"resume={run_dir}" in line
    assert not (run_dir / "seed0" / "final.json").exists()
    run_script("main.py", f"resume={run_dir}", check=True)
    resumed, whole = (json.loads((d / "seed0" / "final.json").read_text()) for d in (run_dir, tiny_run[0]))
    assert {k: resumed[k] for k in SCORES} == {k: whole[k] for k in SCORES}


def test_a_signal_during_the_video_keeps_the_final_scores_and_skips_the_video(tiny_run, tmp_path):
    run_dir, path = tmp_path / "run", tiny_run[1]
    result = run_entry("main.py", run_dir, f"buffer.path={path}", "seeds=[0]", "eval.video=true", check=False,
                       env={**CRASH_ENV, "DT_SIGNAL": "film:SIGTERM"})
    line = error_line(result)
    assert result.returncode == 128 + signal.SIGTERM
    assert "seed 0 stopped by SIGTERM during its video: its final scores are kept" in line
    kept, whole = (json.loads((d / "seed0" / "final.json").read_text()) for d in (run_dir, tiny_run[0]))
    assert {k: kept[k] for k in SCORES} == {k: whole[k] for k in SCORES}
    assert not (run_dir / "seed0" / "video.mp4").exists() and not list(run_dir.rglob("*.tmp*"))


# 7. Every OSError and rendering error is one line naming the file or MUJOCO_GL's value, and the fix

def test_a_bad_mujoco_gl_fails_no_run_without_a_video(hopper_file, tmp_path):
    run_entry("main.py", tmp_path / "run", f"buffer.path={hopper_file}", "seeds=[0]", "train.steps=10",
              env={"MUJOCO_GL": "invalid"})  # check: it ends well
    assert (tmp_path / "run" / "seed0" / "final.json").exists()


def test_a_bad_mujoco_gl_with_a_video_is_one_line_before_training(hopper_file, tmp_path):
    result = run_entry("main.py", tmp_path / "run", f"buffer.path={hopper_file}", "seeds=[0]", "eval.video=true",
                       check=False, env={"MUJOCO_GL": "invalid"})
    line = error_line(result)
    assert "MUJOCO_GL=invalid" in line and "MUJOCO_GL=egl" in line and "Resume with" not in line
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "seed0" / "last.pt").exists()


WRITES = [("main.py", "config.yaml", "EROFS"), ("main.py", "seed0/train.csv", "ENOSPC"),
          ("main.py", "seed0/last.pt", "EROFS"), ("main.py", "results.png", "ENOSPC"),
          ("main.py", "seed0/final.json", "ENOSPC"), ("main.py", "summary.json", "ENOSPC"),
          ("main_mp.py", "seed0/last.pt", "ENOSPC"), ("main_mp.py", "summary.json", "EROFS")]


@pytest.mark.parametrize("script, file, error", WRITES)
def test_a_write_that_fails_is_one_line_naming_the_file_and_a_resume_continues(tiny_run, tmp_path, script, file,
                                                                              error):
    run_dir, path = tmp_path / "run", tiny_run[1]
    result = run_entry(script, run_dir, f"buffer.path={path}", "seeds=[0]", check=False,
                       env={**CRASH_ENV, "DT_WRITE_ERROR": f"{Path(file).name}:{error}"})  # from its first write on
    line = error_line(result)
    assert f"cannot write {run_dir / file} ({os.strerror(getattr(errno, error))})" in line
    assert "free space on its disk or make its folder writable" in line and "Traceback" not in result.stderr
    assert not list(run_dir.rglob("*.tmp"))
    if file == "config.yaml":  # nothing started: nothing to resume
        assert "resume" not in line and not (run_dir / "config.yaml").exists()
        return
    assert f"resume with: python {script} resume={run_dir}" in line.lower()
    run_script(script, f"resume={run_dir}", check=True)  # what was written stays: it resumes to the same scores
    resumed, whole = (json.loads((d / "seed0" / "final.json").read_text()) for d in (run_dir, tiny_run[0]))
    assert {k: resumed[k] for k in SCORES} == {k: whole[k] for k in SCORES}
    assert json.loads((run_dir / "summary.json").read_text())["seeds"] == [0]


def test_a_full_disk_while_writing_the_video_names_the_file_not_mujoco_gl(tmp_path, small_frames, caplog):
    from test_eval import fixed_policy

    import core
    from conftest import compose
    from plumbing.runfolder import Run, SeedFolder

    class FullDisk(SeedFolder):
        def save_video(self, frames, fps, name="video.mp4"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from types import SimpleNamespace

    from plumbing.record import SeedRecord
    cfg = compose("eval.video=true")
    frames = core.film(fixed_policy(cfg.env.id), cfg, 0)
    SeedRecord.save_video(SimpleNamespace(seed=0, folder=FullDisk(Run(tmp_path / "run"), 0)), frames, 30)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(tmp_path / "run" / "seed0" / "video.mp4") in errors[0], errors
    assert "No space left on device" in errors[0] and "MUJOCO_GL" not in errors[0]


# 5. A NaN score stops the seed with its cause; a time limit below D4RL's is said to give another scale

def test_a_nan_score_at_an_evaluation_stops_the_seed_with_its_cause_and_writes_no_scores(tmp_path):
    from test_eval import fixed_policy

    import core
    from conftest import compose
    from plumbing.record import NonFiniteScoreError
    from plumbing.runfolder import Run

    cfg, run = compose(), Run(tmp_path)  # the run folder exists, as a run makes it first
    model = fixed_policy(cfg.env.id)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # NaN actions: NaN rewards (the control cost)
    with pytest.raises(NonFiniteScoreError, match="seed 0: the final evaluation scored nan") as error:
        core.final_evaluation(model, cfg, 0)
    assert "\n" not in str(error.value) and run.seed(0).final() is None


def test_a_time_limit_below_d4rls_is_named_in_the_log_and_final_json(tiny_run):
    run_dir = tiny_run[0]  # env.max_episode_len=100
    assert "episodes cut at env.max_episode_len=100 steps: not the scale" in (run_dir / "main.log").read_text()
    assert json.loads((run_dir / "seed0" / "final.json").read_text())["time_limit"] == 100


# Issue 39. 1: a closing terminal (SIGHUP) is a stop like SIGTERM; evaluate.py stops in one line

def test_a_closing_terminal_checkpoints_every_seed_of_main_mp_and_tells_how_to_resume(hopper_file, tmp_path):
    run_dir = tmp_path / "run"
    parent = start_script("main_mp.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}",
                          "seeds=[0,1]", *LONG, new_session=True)
    wait_for_training(run_dir)
    os.killpg(parent.pid, signal.SIGHUP)  # as the terminal's close reaches its whole process group
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGHUP and len(lines(err)) == 1, err
    assert "interrupted: seeds [0, 1] stopped with a checkpoint" in err and f"resume={run_dir}" in err
    assert all((run_dir / f"seed{seed}" / "last.pt").exists() for seed in (0, 1))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_evaluate_py_in_one_line(tiny_run, tmp_path, sig):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    result = run_script("evaluate.py", f"run={run_dir}", "targets=[100]", "episodes=1",
                        env={**CRASH_ENV, "DT_SIGNAL": f"rollout:{sig}"})  # as a seed's sweep starts
    line = error_line(result)
    assert result.returncode == 128 + signal.Signals[sig] and f"interrupted by {sig}" in line
    assert "Traceback" not in result.stderr and not list(run_dir.rglob("*.tmp"))


# Issue 39. 4: no traceback anywhere: one line naming the file and the fix, nothing complete lost

def test_a_truncated_final_json_is_named_with_the_fix_on_resume(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    final = run_dir / "seed0" / "final.json"
    final.write_text(final.read_text()[:20])
    result = run_script("main.py", f"resume={run_dir}", "seeds=[0,1,2]")
    line = error_line(result)
    assert f"{final} is empty or not JSON" in line and "delete it" in line and "Traceback" not in result.stderr
    assert not (run_dir / "seed2").exists()


def test_a_truncated_sweep_part_is_named_with_the_fix_in_evaluate_py(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    (run_dir / "seed0" / "sweep_final.json").write_text('{"settings": {"targ')
    result = run_script("evaluate.py", f"run={run_dir}", "targets=[100]", "episodes=1")
    line = error_line(result)
    assert f"{run_dir / 'seed0' / 'sweep_final.json'} is empty or not JSON" in line and "delete it" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where, told", [("under a file", "is a file, not a folder"),
                                         ("at a file", "is a file, not a folder"),
                                         ("too long a name", "File name too long")])
def test_a_run_folder_that_cannot_be_made_is_one_line(hopper_file, tmp_path, where, told):
    (tmp_path / "file").write_text("mine")
    folder = {"under a file": tmp_path / "file" / "run", "at a file": tmp_path / "file",
              "too long a name": tmp_path / ("a" * 300)}[where]
    result = run_script("main.py", *TINY, f"buffer.path={hopper_file}", "seeds=[0]", f"hydra.run.dir={folder}")
    assert told in error_line(result) and "Traceback" not in result.stderr
    assert (tmp_path / "file").read_text() == "mine"


# Issue 39. 5: messages that are true

def test_a_run_folder_deleted_during_training_is_said_to_have_vanished_and_not_made_again(hopper_file, tmp_path):
    run_dir = tmp_path / "run"
    process = start_script("main.py", *TINY, f"hydra.run.dir={run_dir}", f"buffer.path={hopper_file}", "seeds=[0]",
                           *LONG)
    wait_for_training(run_dir)
    run_dir.rename(tmp_path / "gone")  # as `rm -r` takes it away, at once
    shutil.rmtree(tmp_path / "gone")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and len(lines(err)) == 1, err
    assert "the run folder vanished" in err and "Resume with" not in err and "main.log" not in err
    assert not run_dir.exists()


def test_a_run_of_another_version_is_named_as_such_on_resume_and_in_evaluate_py(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    with open(run_dir / "config.yaml", "a") as f:
        f.write("trian:\n  steps: 3\n")  # a key today's schema lacks
    for result in (run_script("main.py", f"resume={run_dir}", "seeds=[0,1,2]"),
                   run_script("evaluate.py", f"run={run_dir}", "targets=[100]", "episodes=1")):
        line = error_line(result)
        assert str(run_dir / "config.yaml") in line and "another version of this project" in line and "trian" in line
    assert not (run_dir / "seed2").exists()


def test_a_run_folder_inside_another_run_is_refused(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    result = run_script("main.py", *TINY, f"buffer.path={tiny_run[1]}", "seeds=[5]",
                        f"hydra.run.dir={run_dir / 'seed0'}")
    assert f"lies inside the run {run_dir}" in error_line(result)
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_only_keys_name_code_never_values():
    from cfgs.schema import ConfigError, refuse_code_in_argv
    refuse_code_in_argv(["main.py", "hydra.run.dir=runs/run_target_nan", "wandb.project=my_target_()"])
    for override in ("+model={_target_: os.makedirs, name: x}", "+hydra.callbacks.x._target_=os.makedirs"):
        with pytest.raises(ConfigError, match="names code to run"):
            refuse_code_in_argv(["main.py", override])
