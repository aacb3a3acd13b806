"""bench.py end to end, with a few steps: its table and JSON; and a training run of the reference model."""
import json
import signal
import time
from pathlib import Path

import core
from cfgs import schema
from conftest import compose, run_script, start_script
from models import ReferenceDT
from plumbing.runfolder import Run
from utils import new_path


def test_bench_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    tiny = ["--steps", "2", "--episodes", "1", "--batch-size", "4", "--context-len", "5", "--embed-dim", "16",
            "--n-layers", "1", "--trajectories", "10"]
    result = run_script("tools/bench.py", *tiny, "--out", str(out), check=True, fresh=True)
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1 and results["matmul_gflops"]["fp32"] > 0
    for env in ("hopper", "walker2d"):
        train = results["train"][env]
        assert train["reference_ms"] > 0 and train["speedup_fp32"] == train["reference_ms"] / train["fp32_ms"]
        assert train["speedup_default"] == train[f"speedup_{results['default_precision']}"]
    assert results["eval"]["vectorized_steps_per_s"] > 0 and results["eval"]["sequential_steps_per_s"] > 0
    assert results["batch_sampling_ms"] > 0 and results["parallel_3_seeds_steps_per_s"] > 0
    hopper = results["train"]["hopper"]  # the matmuls' share of the default step, and a step of only them
    assert 0 < hopper["matmul_share"] < 1
    assert hopper["matmul_only_speedup"] > hopper["speedup_default"]
    assert "a step of only these matmuls would be" in result.stdout
    assert "train step hopper project fp32" in result.stdout and "eval 1 x 1000 steps" in result.stdout
    assert results["shape"] == {"batch_size": 4, "context_len": 5, "embed_dim": 16, "n_layers": 1}


def test_the_reference_model_trains_and_its_checkpoint_loads_as_one(hopper_file, tmp_path):
    cfg = compose("model.implementation=models.ReferenceDT", f"buffer.path={hopper_file}")
    schema.check(cfg)  # what main.py checks before it trains
    core.train(cfg, 0, Run(tmp_path))
    assert isinstance(core.load_policy(tmp_path / "seed0" / "final.pt"), ReferenceDT)


TINY = ["--batch-size", "4", "--context-len", "5", "--embed-dim", "16", "--n-layers", "1"]


def pids_after(prefix, stdout):
    """The pids bench.py printed on its line that starts with `prefix`."""
    line = next(line for line in stdout.splitlines() if line.startswith(prefix))
    return [int(pid) for pid in line.split("pids", 1)[1].split()]


def running(pid):
    """Is `pid` a live (not zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_bench_busy_tables_each_setting_at_each_load_and_leaves_no_competitor(tmp_path):
    out = tmp_path / "busy.json"
    result = run_script("tools/bench.py", "--busy", "0", "2", "--steps", "2", "--rounds", "2", *TINY, "--out", str(out),
                        check=True)
    results = json.loads(out.read_text())
    settings = ["default", "1 thread", "all cores, active", "all cores, passive", "all cores, spin 1k",
                "all cores, spin 10k", "all cores, spin 300k"]
    assert [level["competitors"] for level in results["levels"]] == [0, 2]
    assert all(list(level["ms"]) == settings and min(level["ms"].values()) > 0 for level in results["levels"])
    assert [s["wait"] for s in results["settings"].values()][2:] == [
        "active", "passive", "spin 1000 times, then sleep", "spin 10000 times, then sleep",
        "spin 300000 times, then sleep"]
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 * len(settings) and all(line.count("|") == 8 for line in table)
    competitors = [pid for level in results["levels"] for pid in level["competitor_pids"]]
    assert len(competitors) == 2 and not any(running(pid) for pid in competitors)
    assert not any(running(pid) for pid in pids_after("settings' processes", result.stdout))


def test_bench_busy_ends_its_competitors_on_ctrl_c(tmp_path):
    bench = start_script("tools/bench.py", "--busy", "2", "--steps", "100000", *TINY, "--out", str(tmp_path / "b.json"),
                         new_session=True)
    deadline = time.monotonic() + 300
    while "2 competitors: pids" not in Path(bench.out).read_text():
        assert bench.poll() is None and time.monotonic() < deadline, Path(bench.err).read_text()
        time.sleep(0.2)
    stdout = Path(bench.out).read_text()
    children = pids_after("2 competitors", stdout) + pids_after("settings' processes", stdout)
    assert len(children) == 2 + 7 and all(running(pid) for pid in children)
    bench.send_signal(signal.SIGINT)
    bench.wait(180)  # on a loaded machine the seven workers take a while to end
    assert not any(running(pid) for pid in children) and not (tmp_path / "b.json").exists()


def test_bench_never_replaces_an_earlier_output_unless_told(tmp_path):
    (tmp_path / "bench.json").write_text("earlier")
    (tmp_path / "bench-1.json").write_text("earlier")
    assert new_path(tmp_path / "bench.json") == tmp_path / "bench-2.json"
    assert new_path(tmp_path / "other.json") == tmp_path / "other.json"
