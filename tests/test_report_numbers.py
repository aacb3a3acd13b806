"""report.py's numbers: the difference test over seeds, a curve's trend (tools/stats.py), and how a run's data is
known (tools/runs.py)."""
import pytest
from test_report import HOPPER, make_run, row, write

from conftest import write_d4rl_file
from tools import runs, stats


def finals(scores, episode_std=1.0):
    return [{"score_mean": s, "score_std": episode_std, "episodes": 100} for s in scores]


def test_a_difference_counts_only_where_its_interval_over_seeds_excludes_zero():
    assert stats.claim(stats.difference(finals([70, 71, 72]), finals([58, 60, 62]))) == "a difference of +11.0 ± 4.2"
    assert stats.claim(stats.difference(finals([64.8, 65.0, 64.6]), finals([64.2, 64.5, 63.7]))).startswith(
        "no difference shown (+0.7 ±")  # the sum of the two population stds (0.6) would have called it one
    assert stats.difference(finals([1.0]), finals([2.0, 3.0])) is None


def test_seeds_that_agree_by_chance_keep_their_final_evaluations_noise():
    same = stats.difference(finals([64.2, 64.2, 64.2], episode_std=3.0), finals([64.2, 64.2, 64.2], episode_std=3.0))
    assert same[1] > 0.5  # each mean is no surer than its 100 episodes (std 3 -> 0.3 a seed) allow


def test_a_curve_still_rising_at_the_end_is_told_from_a_level_one():
    steps = [2000 * i for i in range(1, 11)]
    climbing = [{"step": steps, "score_mean": [s / 400 + seed for s in steps]} for seed in range(3)]
    level = [{"step": steps, "score_mean": [50 + (-1) ** i for i in range(10)]} for _ in range(3)]
    assert stats.rising(climbing) == pytest.approx(2.5) and stats.rising(level) is None
    assert stats.trend_text(climbing, 20000) == "still rising at 20,000 steps (+2.5 per 1,000 steps)"


def test_a_runs_data_is_checked_by_the_state_statistics_stored_in_its_policy(tmp_path):
    import torch
    data = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    run = make_run(tmp_path / "runs" / "day" / "hopper", HOPPER, [50.0], **{"buffer.files": [str(data)]})
    mean, std = runs.state_statistics((data,), 100.0, 1000.0)
    policy = {"model": {"state_mean": torch.tensor(mean), "state_std": torch.tensor(std)}}
    assert runs.load_run(run).identity() == "not checked: no policy kept"
    torch.save(policy, run / "seed0" / "final.pt")
    assert runs.load_run(run).identity() == "state statistics match"
    policy["model"]["state_mean"] += 1
    torch.save(policy, run / "seed0" / "final.pt")
    assert runs.load_run(run).identity() == "state statistics differ"


def test_a_run_of_another_machine_is_its_own_setting_compared_with_its_own_default(tmp_path):
    day = tmp_path / "runs" / "day"
    default = make_run(day / "hopper", HOPPER, [58.0, 60.0, 62.0])
    old = [make_run(day / "old", HOPPER, [50.0, 51.0, 52.0], **{"train.precision": "fp32"}),
           make_run(day / "old-top10", HOPPER, [53.0, 54.0, 55.0], **{"train.precision": "fp32",
                                                                     "buffer.top_percent": 10.0})]
    machines = tmp_path / "machines.yaml"
    machines.write_text("kinds: {here: this one, avx2: an older one}\ndefault: here\nruns: {old: avx2, old-top10: avx2}\n")
    md = write([default, *old], tmp_path / "report", "--machines", str(machines))
    appendix = md.split("# Appendix")[1]
    assert row(appendix, "DT, top 10%, fp32, on the avx2 machine")[4] == "+3.0 ± 2.3"  # against "old", not "hopper"
    assert "(fp32, on the avx2 machine, as is its baseline)" in md and "1 run in fp32 on an older one" not in md
    machines.write_text("kinds: {here: this one}\ndefault: here\nruns: {old: avx2}\n")
    with pytest.raises(SystemExit, match="machine avx2 is not under kinds: add it there"):
        write([default], tmp_path / "again", "--machines", str(machines))
