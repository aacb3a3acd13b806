"""evaluate.py on a tiny trained run: the sweep's CSV, figure and log; bad inputs in one line."""
from pathlib import Path

import pytest

import utils
from conftest import copy_run, run_entry, run_script, write_d4rl_file


def read(path):
    return path.read_text()


def test_evaluate_py_sweeps_the_targets_of_every_seed_into_the_run_folder(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "targets=[500,3600]", "episodes=2", check=True, fresh=True)
    rows = utils.read_csv(run_dir / "sweep_final.csv")
    assert list(rows) == ["seed", "target", "episode", "return", "score"] and len(rows["seed"]) == 2 * 2 * 2
    assert set(rows["target"]) == {500.0, 3600.0} and (run_dir / "sweep_final.png").stat().st_size > 0
    assert "2 targets x 2 episodes x 2 seeds in" in read(run_dir / "evaluate.log")


def test_a_stopped_sweep_started_again_reuses_the_seeds_it_finished(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    sweep = ("evaluate.py", f"run={run_dir}", "targets=[500,3600]", "episodes=2")
    run_script(*sweep, check=True)
    whole = (run_dir / "sweep_final.csv").read_bytes()
    (run_dir / "seed1" / "sweep_final.json").unlink()  # as if stopped during seed 1's pass
    (run_dir / "sweep_final.csv").unlink()
    run_script(*sweep, check=True)
    log = read(run_dir / "evaluate.log")
    assert "seed 0: reused seed0/sweep_final.json" in log and "x 1 seeds in" in log and "(1 reused)" in log
    assert (run_dir / "sweep_final.csv").read_bytes() == whole  # the same rows as the sweep in one go
    run_script(*sweep[:-1], "episodes=3", check=True)  # other settings: every seed again
    assert len(utils.read_csv(run_dir / "sweep_final.csv")["seed"]) == 2 * 2 * 3
    assert read(run_dir / "evaluate.log").count("reused seed") == 1


def test_a_named_evaluation_lands_beside_the_sweep(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "targets=[500,3600]", "episodes=2", check=True)
    sweep = (run_dir / "sweep_final.csv").read_bytes()
    run_script("evaluate.py", f"run={run_dir}", "targets=[3600]", "episodes=3", "name=target_3600", check=True)
    rows = utils.read_csv(run_dir / "target_3600.csv")
    assert set(rows["target"]) == {3600.0} and len(rows["seed"]) == 2 * 3
    assert (run_dir / "target_3600.png").exists() and (run_dir / "seed0" / "target_3600.json").exists()
    assert (run_dir / "sweep_final.csv").read_bytes() == sweep
    assert "reused" not in read(run_dir / "evaluate.log")  # each name keeps its own seeds' parts


@pytest.mark.parametrize("override, message", [
    ("run=/nonexistent/run", "error: run=/nonexistent/run: no run there (no config.yaml)"),
    ("checkpoint=last", "checkpoint=last: choose one of final, best"),
    ("targets=[]", "targets=[]: give finite returns"),
    ("episodes=0", "episodes=0: must be > 0"),
    ("name=a/b", "name=a/b: use letters, digits, _ and - (a file name)"),
])
def test_evaluate_py_names_a_bad_input_in_one_line(tiny_run, tmp_path, override, message):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")  # evaluate.py logs into the run folder
    result = run_script("evaluate.py", f"run={run_dir}", override)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
    assert not Path("/nonexistent").exists()


def test_evaluate_py_needs_a_checkpoint(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    for best in run_dir.glob("seed*/best.pt"):
        best.unlink()
    result = run_script("evaluate.py", f"run={run_dir}", "checkpoint=best")
    assert result.returncode != 0 and f"run={run_dir}: no seed<N>/best.pt there" in result.stderr


def test_a_run_films_one_episode_of_each_seeds_final_policy(tmp_path):
    path = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    run_entry("main.py", tmp_path / "run", f"buffer.path={path}", "seeds=[0]", "train.steps=5", "eval.video=true")
    assert (tmp_path / "run" / "seed0" / "video.mp4").stat().st_size > 0
