"""Speed benchmark: the project's training step against models.ReferenceDT, a plain eager DT (nn.MultiheadAttention,
torch's dropout, every token through every block), both timed in one process; its first line names the machine.

    python tools/bench.py                     # prints a table, writes runs/bench.json
    python tools/bench.py --steps 100 --out /tmp/bench.json
    python tools/bench.py --device cuda       # on a GPU
    python tools/bench.py --levers fp32       # only issue 42's levers, against the default step
"""
import sys  # noqa: I001
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules, run as tools/bench.py
from plumbing import threads  # noqa: I001,E402  first, before torch loads: it sets OpenMP's wait policy

import argparse
import json
import os
import platform
import time
from typing import Any, Callable

import numpy as np
import torch

import core
import utils
from cfgs import schema
from models import DecisionTransformer, DTConfig, ReferenceDT

CFG = schema.defaults()  # the values of cfgs/config.yaml
SHAPES = {"hopper": (11, 3), "walker2d": (17, 6)}  # (state dim, action dim) of the -v4 envs
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def default_model_config(state_dim: int, act_dim: int, **overrides: Any) -> DTConfig:
    """The default config's model (cfgs/config.yaml) for these space sizes."""
    m, K = CFG.model, CFG.buffer.context_len
    return DTConfig(**{**dict(state_dim=state_dim, act_dim=act_dim, context_len=K, embed_dim=m.embed_dim,
                              n_layers=m.n_layers, n_heads=m.n_heads, dropout=m.dropout), **overrides})


def random_batch(state_dim: int, act_dim: int, batch_size: int = CFG.train.batch_size, K: int = CFG.buffer.context_len,
                 seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch_size, K, state_dim, generator=g), torch.rand(batch_size, K, act_dim, generator=g) * 2 - 1,
            torch.randn(batch_size, K, 1, generator=g), torch.randint(0, 1000, (batch_size, K), generator=g),
            torch.ones(batch_size, K))


def train_stepper(model: torch.nn.Module, batch: tuple, precision: str = "fp32",
                  optimizer: torch.optim.Optimizer | None = None) -> Callable[[], float]:
    """A function timing one core.train_step on `batch` (the default config's optimizer, or `optimizer`) in seconds."""
    optimizer = optimizer or model.configure_optimizer(CFG.train.lr, CFG.train.weight_decay)
    scheduler = core.lr_scheduler(optimizer, CFG.train)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        core.train_step(model, optimizer, scheduler, batch, CFG.train, precision)["loss"].item()
        return time.perf_counter() - start
    return step


def time_train_step(model: torch.nn.Module, batch: tuple, steps: int, precision: str = "fp32") -> float:
    """Median seconds of core.train_step with the default config, after 10 warm-up steps."""
    step = train_stepper(model, batch, precision)
    return float(np.median([step() for _ in range(steps + 10)][10:]))


def matmul_share(model: torch.nn.Module, batch: tuple, precision: str, steps: int = 20) -> float:
    """The matmuls' share of a train step's op time (torch.profiler's self CPU time, after 5 warm-up steps)."""
    step = train_stepper(model, batch, precision)
    for _ in range(5):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    self_us = {event.key: event.self_cpu_time_total for event in profiler.key_averages()}
    return sum(self_us.get(op, 0.0) for op in MATMUL_OPS) / sum(self_us.values())


def levers(steps: int, precision: str) -> dict:
    """Issue 42's levers, AdamW fused=True and torch.compile (bf16: also the ceiling of fewer casts, model and batch in
    bf16, no autocast), interleaved with the default step (a busy machine slows all alike): {lever: its speedup}."""
    batch, steppers = random_batch(*SHAPES["hopper"]), {}
    names = ["default", "AdamW fused", "torch.compile(model)"] + ["all bf16 (ceiling)"] * (precision == "bf16")
    for name in names:
        torch.manual_seed(0)
        model = DecisionTransformer(default_model_config(*SHAPES["hopper"]))
        optimizer = model.configure_optimizer(CFG.train.lr, CFG.train.weight_decay)
        if name == "AdamW fused":  # the same groups, each asking for the fused kernel (a group's foreach=True wins)
            optimizer = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                           for g in optimizer.param_groups], lr=CFG.train.lr, fused=True)
        if name == "all bf16 (ceiling)":  # the weights too: not a training recipe, the time no cast would save
            steppers[name] = train_stepper(model.bfloat16(), tuple(t.bfloat16() if t.is_floating_point() else t
                                                                   for t in batch))
            continue
        compiled = torch.compile(model) if name == "torch.compile(model)" else model
        steppers[name] = train_stepper(compiled, batch, precision, optimizer)
    times = {name: [] for name in steppers}
    for _ in range(steps + 5):  # 5 warm-up steps; torch.compile compiles in its first
        for name, step in steppers.items():
            times[name].append(step())
    print(f"torch.compile: {times['torch.compile(model)'][0]:.0f} s to compile")
    median = {name: float(np.median(t[5:])) for name, t in times.items()}
    return {name: median["default"] / m for name, m in median.items() if name != "default"}


def cpu_kind() -> str:
    """The CPU kind as docs/speed.md's rows name it: 'AMX', 'AVX-512 bf16' or 'AVX2' (then runs are fp32)."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX-512 bf16"
    return torch.backends.cpu.get_cpu_capability().replace("AVX", "AVX-").replace("AVX-2", "AVX2")


def machine(device: torch.device) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    facts = {"cpu": cpu, "kind": cpu_kind(), "cores": os.cpu_count(), "torch": torch.__version__,
             "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "bf16_cpu": utils.native_bf16(torch.device("cpu")), "device": str(device)}
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device)
        facts.update(gpu=gpu.name, compute_capability=f"{gpu.major}.{gpu.minor}", cuda=torch.version.cuda,
                     gpu_memory_gib=gpu.total_memory / 2**30)
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per measurement")
    for flag, default in (("--batch-size", CFG.train.batch_size), ("--context-len", CFG.buffer.context_len),
                          ("--embed-dim", CFG.model.embed_dim), ("--n-layers", CFG.model.n_layers)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--out", help="the JSON file (default: runs/bench.json, or bench-<n>.json if that exists)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda[:<index>] on a GPU machine")
    parser.add_argument("--levers", choices=["fp32", "bf16"], help="only time issue 42's levers in this precision")
    args = parser.parse_args()
    threads.set_torch_threads(1)
    if args.levers:
        print(f"{cpu_kind()} CPU, hopper {args.levers} step, {args.steps} steps each, interleaved:")
        for name, ratio in levers(args.steps, args.levers).items():
            print(f"  {name:22s} {ratio:.2f}x the default step")
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: torch sees no CUDA GPU here (torch {torch.__version__})")
    if args.out:
        utils.refuse_replacing(args.out, args.force)
    out = Path(args.out) if args.out else utils.new_path(Path("runs") / "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    shape = dict(context_len=args.context_len, embed_dim=args.embed_dim, n_layers=args.n_layers)
    default = utils.pick_precision(CFG.train.precision, device)  # what a default run uses here
    precisions = dict.fromkeys(["fp32", default])  # emulated bf16 is many times slower than fp32: not measured
    m = machine(device)
    results = {"machine": m, "shape": {"batch_size": args.batch_size, **shape}, "default_precision": default,
               "train": {}}
    gpu = f" on {m['gpu']} (compute capability {m['compute_capability']})" if "gpu" in m else ""
    print(f"machine: {m['kind']} CPU ({m['cpu']}, {m['cores']} cores, torch {m['torch']}){gpu}; "
          f"default precision {default}")
    print(f"{'measurement (' + m['kind'] + ')':42s} {'ms':>8s} {'per s':>8s} {'vs ref':>7s}")
    for env, (state_dim, act_dim) in SHAPES.items():
        model = DecisionTransformer(default_model_config(state_dim, act_dim, **shape)).to(device)
        reference = ReferenceDT(model.config).to(device).load_project_weights(model)
        batch = tuple(t.to(device) for t in random_batch(state_dim, act_dim, args.batch_size, args.context_len))
        ref_s = time_train_step(reference, batch, args.steps)
        ours = {p: time_train_step(model, batch, args.steps, precision=p) for p in precisions}
        results["train"][env] = {"reference_ms": ref_s * 1e3, **{f"{p}_ms": s * 1e3 for p, s in ours.items()},
                                 **{f"speedup_{p}": ref_s / s for p, s in ours.items()},
                                 "speedup_default": ref_s / ours[default]}
        named = {f"project {p}" + (" (default)" if p == default else ""): s for p, s in ours.items()}
        for name, seconds in {**named, "reference fp32": ref_s}.items():
            print(f"{f'train step {env} {name}':42s} {seconds * 1e3:8.1f} {1 / seconds:8.2f} {ref_s / seconds:6.2f}x")
    hopper = results["train"]["hopper"]
    if device.type == "cpu":  # the profiler's CPU time tells nothing of a GPU's kernels
        model = DecisionTransformer(default_model_config(*SHAPES["hopper"], **shape))
        share = matmul_share(model, random_batch(*SHAPES["hopper"], args.batch_size, args.context_len), default)
        hopper.update(matmul_share=share, matmul_only_speedup=hopper["reference_ms"] / share / hopper[f"{default}_ms"])
        print(f"the hopper {default} step's matmuls: {share:.0%} of its op time; a step of only these matmuls would "
              f"be {hopper['matmul_only_speedup']:.2f}x the reference")
    utils.atomic_write_bytes(out, json.dumps(results, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
