"""utils.py: atomic writes, the normalized score, metrics CSV and the results figure."""
import os

import numpy as np
import pytest

import utils
from conftest import compose
from plumbing.runfolder import Run


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "eval.csv"
    utils.atomic_write_bytes(path, b"old")

    def killed_before_rename(src, dst):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        utils.atomic_write_bytes(path, b"new and longer")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["eval.csv"]


def test_normalized_score_is_0_for_random_and_100_for_expert():
    np.testing.assert_allclose(utils.normalized_score([-20.272305, 3234.3], -20.272305, 3234.3), [0.0, 100.0])


def test_csv_round_trip(tmp_path):
    rows = [{"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.25}]
    utils.write_csv(rows, tmp_path / "train.csv")
    read = utils.read_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(read["step"], [10, 20])
    np.testing.assert_array_equal(read["loss"], [0.5, 0.25])
    assert utils.read_csv(tmp_path / "missing.csv") == {}


def test_a_seed_still_training_does_not_cut_the_finished_seeds_curves():
    first = {"step": np.array([10, 20, 30]), "loss": np.array([1.0, 2.0, 3.0])}
    second = {"step": np.array([10, 20]), "loss": np.array([3.0, 4.0])}  # still running
    steps, mean, std, counts = utils.mean_std_over_seeds([first, second, {}], "loss")
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_allclose(mean, [2.0, 3.0, 3.0])  # step 30: the first seed alone
    np.testing.assert_allclose(std, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(counts, [2, 2, 1])


def test_results_figure_is_drawn_from_the_seed_folders(tmp_path):
    for seed, offset in ((0, 0.0), (1, 100.0)):
        utils.write_csv([{"step": s, "return_mean": 1000 + offset + s} for s in (10, 20)],
                        tmp_path / f"seed{seed}" / "eval.csv")
        utils.write_csv([{"step": s, "loss": 1 / s} for s in (5, 10)], tmp_path / f"seed{seed}" / "train.csv")
    Run(tmp_path).plot(compose())  # hopper-medium
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_write_into_a_folder_deleted_under_it_fails_as_a_write_error_and_makes_no_folder(tmp_path, monkeypatch):
    import shutil
    folder, replace = tmp_path / "run" / "seed0", os.replace
    folder.mkdir(parents=True)

    def deleted_first(src, dst):  # `rm -r` of the run folder between the temporary's write and its rename
        shutil.rmtree(tmp_path / "run")
        replace(src, dst)
    monkeypatch.setattr(os, "replace", deleted_first)
    with pytest.raises(utils.WriteError):
        utils.atomic_write_bytes(folder / "train.csv", b"step\n")
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(utils.WriteError):  # a later write does not make the run folder again
        utils.atomic_write_bytes(folder / "train.csv", b"step\n")
    assert not (tmp_path / "run").exists()
