"""A GPU checked end to end in one command: its facts, the training step's speed, and a 1000-step run with its
evaluations, written into one folder for a report.

    python tools/gpu_check.py                                 # cuda; writes runs/gpu_check/ (or -1, -2, ...)
    python tools/gpu_check.py --out runs/gpu_h100 env=walker2d  # further arguments: overrides of the run

The folder holds machine.json (torch, CUDA, the GPU, its compute capability, the precision train.precision=auto
picks there), step.json (ms per training step of the default model, batch 64, K=20: fp32 and the auto precision)
and run/ (the run: main.log, results.png, summary.json, seed0/ with its final.json and timings).
"""
import sys  # noqa: I001
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules, run as tools/gpu_check.py
from plumbing import threads  # noqa: I001,E402  first, before torch loads: it sets OpenMP's wait policy

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402

import torch  # noqa: E402

import utils  # noqa: E402
from models import DecisionTransformer  # noqa: E402
from tools import bench  # noqa: E402

RUN = ["seeds=[0]", "train.steps=1000", "train.warmup_steps=100", "train.log_every=100", "train.eval_every=500",
       "train.checkpoint_every=500", "eval.final_episodes=10", "eval.video=false"]  # a short run, evaluated


def machine(device: torch.device) -> dict:
    """What a report says of the machine: bench.py's facts, the GPU's, and the precision auto picks on `device`."""
    facts = {**bench.machine(), "device": str(device), "precision_auto": utils.pick_precision("auto", device)}
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device)
        facts.update(gpu=gpu.name, compute_capability=f"{gpu.major}.{gpu.minor}", gpu_memory_gib=gpu.total_memory / 2**30,
                     visible_gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    return facts


def step_ms(device: torch.device, precision: str, steps: int) -> dict:
    """Median ms of the default hopper model's training step on `device`, in fp32 and in `precision`."""
    torch.manual_seed(0)
    model = DecisionTransformer(bench.default_model_config(*bench.SHAPES["hopper"])).to(device)
    batch = tuple(t.to(device) for t in bench.random_batch(*bench.SHAPES["hopper"]))
    return {p: bench.time_train_step(model, batch, steps, p) * 1e3 for p in dict.fromkeys(["fp32", precision])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:<index> (or cpu: to try the check itself)")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per precision")
    parser.add_argument("--out", help="the folder (default: runs/gpu_check, or -1, -2, ... if it exists)")
    args, overrides = parser.parse_known_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: torch sees no CUDA GPU here (torch {torch.__version__}): "
                         f"run it on the GPU machine, or give --device cpu to try the check itself")
    out = Path(args.out) if args.out else utils.new_path(Path("runs") / "gpu_check")
    utils.refuse_replacing(out, force=False)
    out.mkdir(parents=True)
    threads.set_torch_threads(1)
    facts = machine(device)
    utils.atomic_write_bytes(out / "machine.json", json.dumps(facts, indent=2).encode())
    ms = step_ms(device, facts["precision_auto"], args.steps)
    utils.atomic_write_bytes(out / "step.json", json.dumps({"batch_size": bench.CFG.train.batch_size,
                                                                  "context_len": bench.CFG.buffer.context_len, "ms": ms}).encode())
    print(f"{facts.get('gpu', facts['cpu'])}: auto picks {facts['precision_auto']}; training step " +
          ", ".join(f"{p} {v:.1f} ms" for p, v in ms.items()), flush=True)
    subprocess.run([sys.executable, str(ROOT / "main.py"), f"device={args.device}", *RUN,
                    f"hydra.run.dir={(out / 'run').resolve()}", *overrides], check=True)
    summary = json.loads((out / "run" / "summary.json").read_text())
    print(f"run: normalized score {summary['score_mean']:.1f}; wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:  # main.py printed its one line
        raise SystemExit(e.returncode) from None
