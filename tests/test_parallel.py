"""Parallel work: main_mp.py's seed processes write what main.py writes, a crashed seed keeps the others; a
multirun study puts one run folder per setting under runs/."""
import json

import pytest
from omegaconf import OmegaConf

from conftest import CRASH_ENV, TINY, run_entry, run_script

SEED_FILES = ["train.csv", "eval.csv", "last.pt", "best.pt", "final.pt", "final.json"]


def read(path):
    return path.read_text()


def test_main_mp_runs_seeds_in_parallel_and_writes_the_same_artifacts(hopper_file, tmp_path):
    run_entry("main_mp.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0,1]")
    for seed in (0, 1):
        for name in SEED_FILES + ["train.log"]:
            assert (tmp_path / f"seed{seed}" / name).exists(), f"seed{seed}/{name}"
    assert (tmp_path / "results.png").exists() and json.loads(read(tmp_path / "summary.json"))["seeds"] == [0, 1]


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_main_mp_reports_a_crashed_seed_and_keeps_the_others(hopper_file, tmp_path, how):
    result = run_entry("main_mp.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0,1]", check=False,
                       env={**CRASH_ENV, "DT_CRASH": f"1:{how}"})
    assert result.returncode != 0 and "seeds [1] failed" in result.stderr
    assert (tmp_path / "seed0" / "final.json").exists() and not (tmp_path / "seed1" / "final.json").exists()
    log = read(tmp_path / "main.log")
    assert ("injected crash in seed 1" if how == "raise" else "killed (exit code -9)") in log
    assert json.loads(read(tmp_path / "summary.json"))["missing_seeds"] == [1] and (tmp_path / "results.png").exists()


def test_a_multirun_study_puts_one_run_folder_per_setting_under_runs(hopper_file, tmp_path):
    run_script("main.py", "-m", *TINY, f"buffer.path={hopper_file}", "seeds=[0]", "train.steps=5",
               "buffer.top_percent=50,100", cwd=tmp_path, check=True)
    (sweep,) = tmp_path.glob("runs/*/*-sweep")
    percents = [OmegaConf.load(sweep / job / "config.yaml").buffer.top_percent for job in ("0", "1")]
    assert percents == [50.0, 100.0] and all((sweep / job / "summary.json").exists() for job in ("0", "1"))
    assert not (tmp_path / "multirun").exists()
