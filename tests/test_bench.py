"""bench.py end to end, with a few steps: its table and JSON; and a training run of the reference model."""
import json

import pytest

import core
from cfgs import schema
from conftest import compose, run_script
from models import ReferenceDT
from plumbing.runfolder import Run
from utils import new_path


def test_bench_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    tiny = ["--steps", "2", "--batch-size", "4", "--context-len", "5", "--embed-dim", "16", "--n-layers", "1"]
    result = run_script("tools/bench.py", *tiny, "--out", str(out), check=True, fresh=True)
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1
    for env in ("hopper", "walker2d"):
        train = results["train"][env]
        assert train["reference_ms"] > 0 and train["speedup_fp32"] == train["reference_ms"] / train["fp32_ms"]
        assert train["speedup_default"] == train[f"speedup_{results['default_precision']}"]
    hopper = results["train"]["hopper"]  # the matmuls' share of the default step, and a step of only them
    assert 0 < hopper["matmul_share"] < 1
    assert hopper["matmul_only_speedup"] > hopper["speedup_default"]
    assert "a step of only these matmuls would be" in result.stdout
    assert results["machine"]["kind"] in result.stdout.splitlines()[0]  # the CPU kind names the tables
    assert "train step hopper project fp32" in result.stdout and "train step walker2d reference fp32" in result.stdout
    assert results["shape"] == {"batch_size": 4, "context_len": 5, "embed_dim": 16, "n_layers": 1}


def test_the_reference_model_trains_and_its_checkpoint_loads_as_one(hopper_file, tmp_path):
    cfg = compose("model.implementation=models.ReferenceDT", f"buffer.path={hopper_file}")
    schema.check(cfg)  # what main.py checks before it trains
    core.train(cfg, 0, Run(tmp_path))
    assert isinstance(core.load_policy(tmp_path / "seed0" / "final.pt"), ReferenceDT)


def test_bench_never_replaces_an_earlier_output_unless_told(tmp_path):
    (tmp_path / "bench.json").write_text("earlier")
    (tmp_path / "bench-1.json").write_text("earlier")
    assert new_path(tmp_path / "bench.json") == tmp_path / "bench-2.json"
    assert new_path(tmp_path / "other.json") == tmp_path / "other.json"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_levers_are_timed_against_the_default_step(monkeypatch, precision):
    import torch

    from tools import bench
    monkeypatch.setattr(torch, "compile", lambda model: model)  # inductor's compile time is not a test's to spend
    ratios = bench.levers(steps=2, precision=precision)
    ceiling = {"all bf16 (ceiling)"} if precision == "bf16" else set()
    assert set(ratios) == {"AdamW fused", "torch.compile(model)", *ceiling} and all(r > 0 for r in ratios.values())
