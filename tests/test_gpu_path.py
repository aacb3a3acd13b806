"""The GPU path with the device mocked: the precision auto picks, the seeds' GPUs, no CUDA in a CPU run's
checkpoints; and tools/gpu_check.py, tried on the CPU."""
import json

import numpy as np
import pytest
import torch

import utils
from conftest import TINY, run_script
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


def test_gpu_check_writes_the_facts_the_step_times_and_an_evaluated_run_into_one_folder(hopper_file, tmp_path):
    out = tmp_path / "check"
    run_script("tools/gpu_check.py", "--device", "cpu", "--steps", "1", "--out", str(out), *TINY,
               f"buffer.path={hopper_file}", cwd=tmp_path, check=True)
    machine, step = json.loads((out / "machine.json").read_text()), json.loads((out / "step.json").read_text())
    assert machine["device"] == "cpu" and machine["precision_auto"] in ("fp32", "bf16")
    assert set(step["ms"]) == {"fp32", machine["precision_auto"]} and all(v > 0 for v in step["ms"].values())
    assert json.loads((out / "run" / "summary.json").read_text())["seeds"] == [0]
    assert (out / "run" / "seed0" / "final.json").is_file()


def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    result = run_script("tools/gpu_check.py", "--out", str(tmp_path / "check"), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().startswith("error: --device cuda: torch sees no CUDA GPU")
    assert not (tmp_path / "check").exists()
