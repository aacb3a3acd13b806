"""main_mp.py: the seeds in parallel processes write what main.py writes; a crashed seed keeps the others."""
import json

import pytest

from conftest import CRASH_ENV, run_entry

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
