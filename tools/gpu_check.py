"""A GPU checked end to end in one command: its facts, the training step's speed, and a 1000-step run with its
evaluations, written into one folder: machine.json (torch, CUDA, the GPU, the precision train.precision=auto picks),
step.json (ms per default training step, fp32 and the auto precision) and run/ (the run's folder).

    python tools/gpu_check.py                                 # cuda; writes runs/gpu_check/ (or -1, -2, ...)
    python tools/gpu_check.py --out runs/gpu_h100 env=walker2d  # further arguments: overrides of the run
"""
import sys  # noqa: I001
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules, run as tools/gpu_check.py
from plumbing import threads  # noqa: I001,E402  first, before torch loads: it sets OpenMP's wait policy

import argparse
import json
import subprocess

import torch

import utils
from models import DecisionTransformer
from tools import bench

RUN = ["seeds=[0]", "train.steps=1000", "train.warmup_steps=100", "train.log_every=100", "train.eval_every=500",
       "train.checkpoint_every=500", "eval.final_episodes=10", "eval.video=false"]  # a short run, evaluated


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
    facts = {**bench.machine(), "device": str(device), "precision_auto": utils.pick_precision("auto", device)}
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device)
        facts.update(gpu=gpu.name, compute_capability=f"{gpu.major}.{gpu.minor}", cuda=torch.version.cuda,
                     gpu_memory_gib=gpu.total_memory / 2**30, visible_gpus=torch.cuda.device_count())
    utils.atomic_write_bytes(out / "machine.json", json.dumps(facts, indent=2).encode())
    torch.manual_seed(0)  # the default hopper model's step, in fp32 and in the precision auto picks
    model = DecisionTransformer(bench.default_model_config(*bench.SHAPES["hopper"])).to(device)
    batch = tuple(t.to(device) for t in bench.random_batch(*bench.SHAPES["hopper"]))
    ms = {p: bench.time_train_step(model, batch, args.steps, p) * 1e3
          for p in dict.fromkeys(["fp32", facts["precision_auto"]])}
    step = {"batch_size": bench.CFG.train.batch_size, "context_len": bench.CFG.buffer.context_len, "ms": ms}
    utils.atomic_write_bytes(out / "step.json", json.dumps(step).encode())
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
