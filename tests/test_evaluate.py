"""evaluate.py on a tiny trained run: the sweep's CSV, figure and log; bad inputs in one line."""
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import evaluate
import utils
from cfgs import schema
from conftest import ROOT, copy_run, run_entry, run_script, write_d4rl_file


def read(path):
    return path.read_text()


def test_evaluate_py_sweeps_the_targets_of_every_seed_into_the_run_folder(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    run_script("evaluate.py", f"run={run_dir}", "targets=[500,3600]", "episodes=2", check=True, fresh=True)
    rows = utils.read_csv(run_dir / "sweep_final.csv")
    assert list(rows) == ["seed", "target", "episode", "return", "score", "length"] and len(rows["seed"]) == 2 * 2 * 2
    assert all(1 <= n <= OmegaConf.load(run_dir / "config.yaml").env.max_episode_len for n in rows["length"])
    assert set(rows["target"]) == {500.0, 3600.0} and (run_dir / "sweep_final.png").stat().st_size > 0
    log = read(run_dir / "evaluate.log")
    assert "2 targets x 2 episodes x 2 seeds in" in log
    assert log.index("seed 1: 2 targets x 2 episodes, one pass of 4 envs") < log.index("seed 1: 500 -> ")  # as it starts


def evaluate_logging(run_dir, *args):
    """evaluate.py on run_dir with args; what it added to evaluate.log."""
    log = run_dir / "evaluate.log"
    before = len(read(log)) if log.exists() else 0
    run_script("evaluate.py", f"run={run_dir}", *args, check=True)
    return read(log)[before:]


def test_a_stopped_sweep_started_again_reuses_the_seeds_it_finished(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    sweep = ("targets=[500,3600]", "episodes=2")
    evaluate_logging(run_dir, *sweep)
    whole = (run_dir / "sweep_final.csv").read_bytes()
    (run_dir / "seed1" / "sweep_final.json").unlink()  # as if stopped during seed 1's pass
    (run_dir / "sweep_final.csv").unlink()
    log = evaluate_logging(run_dir, *sweep)
    assert "seed 0: reused seed0/sweep_final.json" in log and "x 1 seeds in" in log and "(1 reused)" in log
    assert (run_dir / "sweep_final.csv").read_bytes() == whole  # the same rows as the sweep in one go
    for changed in (("targets=[500,3600]", "episodes=3"), ("targets=[500]", "episodes=3")):  # every seed again
        assert "reused" not in evaluate_logging(run_dir, *changed, "overwrite=true")  # replacing: asked for
    shutil.copyfile(run_dir / "seed1" / "final.pt", run_dir / "seed0" / "final.pt")  # another policy in seed 0
    log = evaluate_logging(run_dir, "targets=[500]", "episodes=3")
    assert "seed 1: reused" in log and "seed 0: reused" not in log and "(1 reused)" in log


def test_a_named_evaluation_lands_beside_the_sweep(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    sweep = ("targets=[500,3600]", "episodes=2")
    evaluate_logging(run_dir, *sweep)
    csv, part = (run_dir / "sweep_final.csv").read_bytes(), (run_dir / "seed0" / "sweep_final.json").read_bytes()
    assert "reused" not in evaluate_logging(run_dir, *sweep, "name=again")  # its own parts, not the sweep's
    rows = utils.read_csv(run_dir / "again.csv")
    assert set(rows["target"]) == {500.0, 3600.0} and len(rows["seed"]) == 2 * 2 * 2
    assert (run_dir / "again.png").exists() and (run_dir / "seed0" / "again.json").exists()
    assert (run_dir / "sweep_final.csv").read_bytes() == csv
    assert (run_dir / "seed0" / "sweep_final.json").read_bytes() == part
    assert "(2 reused)" in evaluate_logging(run_dir, *sweep)


def test_a_sweep_of_the_best_policies_films_each_target_and_reuses_only_with_its_videos(
        tiny_run, tmp_path, small_frames, caplog):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    train_cfg = OmegaConf.load(run_dir / "config.yaml")
    train_cfg.env.max_episode_len = 3  # episodes of 3 steps: software rendering takes ~0.1 s a frame
    OmegaConf.save(train_cfg, run_dir / "config.yaml")
    cfg = OmegaConf.merge(schema.own_values("evaluate"),
                          {"run": str(run_dir), "checkpoint": "best", "targets": [500, 3600], "episodes": 1})

    def sweep(video=True):  # in this process, so that small_frames films small frames
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="evaluate"):
            evaluate.evaluate_run(OmegaConf.merge(cfg, {"video": video}))
        return caplog.text

    sweep()
    videos = sorted(p.name for p in run_dir.glob("seed0/*.mp4"))
    assert videos == ["sweep_best_3600.mp4", "sweep_best_500.mp4"] and (run_dir / "sweep_best.csv").exists()
    assert "(2 reused)" in sweep()
    (run_dir / "seed1" / "sweep_best_500.mp4").unlink()
    log = sweep()
    assert "seed 0: reused" in log and "seed 1: reused" not in log
    assert (run_dir / "seed1" / "sweep_best_500.mp4").exists()
    assert "seed 0: reused" not in sweep(video=False)  # the same sweep without videos


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


def test_evaluate_py_on_a_gallery_run_writes_under_runs_and_leaves_the_repository_unchanged(tmp_path):
    gallery_run = ROOT / "gallery" / "hopper-medium"
    status = lambda: subprocess.run(["git", "status", "--porcelain", "--ignored", "gallery"], cwd=ROOT,  # noqa
                                    capture_output=True, text=True, check=True).stdout
    before = status()
    run_script("evaluate.py", f"run={gallery_run}", "targets=[3000]", "episodes=1", "name=quick", cwd=tmp_path,
               check=True)
    assert status() == before
    out = tmp_path / "runs" / "evaluate" / "hopper-medium"
    assert (out / "quick.csv").is_file() and (out / "evaluate.log").is_file() and (out / "seed0/quick.json").is_file()


def test_evaluate_py_out_names_the_output_folder_and_the_run_is_left_unchanged(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run[0], tmp_path / "run")
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    run_script("evaluate.py", f"run={run_dir}", "targets=[500]", "episodes=1", f"out={tmp_path}/sweeps",
               check=True)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == files
    assert (tmp_path / "sweeps" / "sweep_final.csv").is_file() and (tmp_path / "sweeps" / "sweep_final.png").is_file()


def test_only_runs_below_the_gallery_are_redirected(tmp_path):
    gallery = tmp_path / "gallery"
    assert evaluate.output_folder(gallery / "a" / "b", gallery) == Path("runs", "evaluate", "a", "b")
    assert evaluate.output_folder(tmp_path / "runs" / "x", gallery) == tmp_path / "runs" / "x"
