"""The GPU path with the device mocked: the precision auto picks, the seeds' GPUs, no CUDA in a CPU run's
checkpoints; and tools/bench.py --device cuda without a GPU."""

import numpy as np
import pytest
import torch

import utils
from conftest import run_script
from plumbing.runfolder import Run


@pytest.mark.parametrize("capability, precision", [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"),
                                                   ((9, 0), "bf16")])
def test_auto_picks_bf16_on_a_gpu_of_compute_capability_8_or_later_only(monkeypatch, capability, precision):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)  # V100, T4, A100, H100
    assert utils.pick_precision("auto", torch.device("cuda")) == precision
    assert utils.pick_precision("fp32", torch.device("cuda")) == "fp32"


def test_the_seeds_take_the_visible_gpus_in_turn(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("auto", "cuda"):
        assert [utils.seed_device(device, i) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [utils.seed_device(device, 1) for device in ("cpu", "cuda:1")] == ["cpu", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert utils.seed_device("auto", 1) == "auto"


@pytest.mark.parametrize("cuda_started", [False, True])
def test_a_checkpoint_reads_the_cuda_rng_state_only_in_a_run_that_started_cuda(tmp_path, monkeypatch, cuda_started):
    touched = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_started)  # a CUDA run, or a CPU run there
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: touched.append("get") or [torch.ones(2)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: touched.append("set"))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    folder = Run(tmp_path).seed(0)
    folder.save_state(model, optimizer, scheduler, np.random.default_rng(0), {"train": [], "eval": [], "step": 1})
    assert folder.load_state(model, optimizer, scheduler, np.random.default_rng(0))["step"] == 1
    assert touched == (["get", "set"] if cuda_started else [])


def test_bench_without_a_gpu_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    result = run_script("tools/bench.py", "--device", "cuda", "--out", str(tmp_path / "bench.json"), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: --device cuda: torch sees no CUDA GPU")
    assert not (tmp_path / "bench.json").exists()
