"""Speed benchmark: the project's training step and eval against a plain eager reference, in one run.

    python tools/bench.py                     # prints a table, writes bench.json
    python tools/bench.py --steps 100 --out /tmp/bench.json

The reference is models.ReferenceDT (nn.MultiheadAttention, torch's dropout, every token through every block).

Every ratio compares two measurements taken in the same process on the same machine.
"""
import sys  # noqa: I001
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules, run as tools/bench.py
from plumbing import threads  # noqa: I001,E402  first, before torch loads: it sets OpenMP's wait policy (threads.py says why)

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from typing import Any, Callable

import numpy as np
import torch

import core
import utils
from buffer import SequenceBuffer, Transitions
from cfgs import schema
from models import DecisionTransformer, DTConfig, ReferenceDT

CFG = schema.defaults()  # the values of cfgs/config.yaml
SHAPES = {"hopper": (11, 3), "walker2d": (17, 6)}  # (state dim, action dim) of the -v4 envs


def default_model_config(state_dim: int, act_dim: int, **overrides: Any) -> DTConfig:
    """The default config's model (cfgs/config.yaml) for these space sizes."""
    m = CFG.model
    return DTConfig(**{**dict(state_dim=state_dim, act_dim=act_dim, context_len=CFG.buffer.context_len,
                              embed_dim=m.embed_dim, n_layers=m.n_layers, n_heads=m.n_heads, dropout=m.dropout),
                       **overrides})


def random_batch(state_dim: int, act_dim: int, batch_size: int = CFG.train.batch_size, K: int = CFG.buffer.context_len,
                 seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch_size, K, state_dim, generator=g), torch.rand(batch_size, K, act_dim, generator=g) * 2 - 1,
            torch.randn(batch_size, K, 1, generator=g), torch.randint(0, 1000, (batch_size, K), generator=g),
            torch.ones(batch_size, K))


def train_stepper(model: torch.nn.Module, batch: tuple, precision: str = "fp32",
                  optimizer: torch.optim.Optimizer | None = None) -> Callable[[], float]:
    """A function that runs one core.train_step (forward, backward, clip, AdamW; the default config's optimizer
    and schedule, or `optimizer`) on `batch` and returns its seconds."""
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


def train_step_flops(config: DTConfig, batch_size: int = CFG.train.batch_size) -> float:
    """Matmul FLOPs of one training step of the plain model (forward x 3 for forward + backward)."""
    T, C, L = 3 * config.context_len, config.embed_dim, config.n_layers
    per_token_layer = 2 * 12 * C * C  # qkv 3C^2, proj C^2, MLP 8C^2; 2 FLOPs per multiply-add
    attention = 2 * 2 * T * C  # scores and weighted sum, per token (full T; causal halves the useful part)
    return 3 * batch_size * T * L * (per_token_layer + attention)


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def matmul_share(model: torch.nn.Module, batch: tuple, precision: str, steps: int = 20) -> float:
    """The matmuls' share of a train step's op time (torch.profiler's self CPU time, after 5 warm-up steps): a step
    that kept these matmuls and did nothing else would take this share of the step."""
    step = train_stepper(model, batch, precision)
    for _ in range(5):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    self_us = {event.key: event.self_cpu_time_total for event in profiler.key_averages()}
    return sum(self_us.get(op, 0.0) for op in MATMUL_OPS) / sum(self_us.values())


def sampling_seconds(state_dim: int, act_dim: int, reps: int = 500, trajectories: int = 1000,
                     length: int = 1000) -> float:
    """Median host time of SequenceBuffer.sample for a default batch from a D4RL-sized buffer (1M steps)."""
    rng = np.random.default_rng(0)
    n = trajectories * length
    ends = np.zeros(n, dtype=bool)
    ends[length - 1::length] = True
    transitions = Transitions(rng.normal(size=(n, state_dim)).astype(np.float32),
                              rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32), rng.random(n, np.float32), ends)
    data = SequenceBuffer(transitions, CFG.buffer.context_len, CFG.buffer.reward_scale, length)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        data.sample(CFG.train.batch_size, rng)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 30) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def eval_steps_per_second(model: torch.nn.Module, episodes: int, vectorized: bool) -> tuple:
    """Env steps per second of HalfCheetah-v4 (it never falls, so every episode lasts 1000 steps)."""
    model.eval()
    start = time.perf_counter()
    if vectorized:
        core.rollout(model, core.RolloutSpec("HalfCheetah-v4", episodes, 0, 6000, 1000))
    else:
        for i in range(episodes):
            core.rollout(model, core.RolloutSpec("HalfCheetah-v4", 1, i, 6000, 1000))
    seconds = time.perf_counter() - start
    return episodes * 1000 / seconds, seconds


def _parallel_worker(steps: int, num_processes: int, batch_size: int, shape: dict, precision: str, queue: Any) -> None:
    threads.set_torch_threads(num_processes)
    model = DecisionTransformer(default_model_config(*SHAPES["hopper"], **shape))
    batch = random_batch(*SHAPES["hopper"], batch_size, shape["context_len"])
    queue.put(1.0 / time_train_step(model, batch, steps, precision))


def parallel_steps_per_second(steps: int, batch_size: int, shape: dict, precision: str,
                              num_processes: int = 3) -> float:
    """Total training steps/s of `num_processes` seeds trained side by side, as main_mp.py does."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_parallel_worker, args=(steps, num_processes, batch_size, shape, precision, queue))
             for _ in range(num_processes)]
    for p in procs:
        p.start()
    rates = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def levers(steps: int, precision: str) -> dict:
    """Issue 42's levers against the default step, interleaved step by step in this process (so a busy machine
    slows all alike): AdamW fused=True, and torch.compile of the model (inductor; its compile time reported).
    Returns {lever: the default step's median time / the lever's}."""
    batch, config = random_batch(*SHAPES["hopper"]), default_model_config(*SHAPES["hopper"])

    def stepper(fused: bool = False, compiled: bool = False) -> Callable[[], float]:
        torch.manual_seed(0)
        model = DecisionTransformer(config)
        optimizer = model.configure_optimizer(CFG.train.lr, CFG.train.weight_decay)
        if fused:  # the same groups, each asking for the fused kernel (a group's own foreach=True would win)
            optimizer = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                           for g in optimizer.param_groups], lr=CFG.train.lr, fused=True)
        return train_stepper(torch.compile(model) if compiled else model, batch, precision, optimizer)

    steppers = {"default": stepper(), "AdamW fused": stepper(fused=True)}
    start = time.perf_counter()
    steppers["torch.compile(model)"] = stepper(compiled=True)
    for _ in range(2):  # the compilation, in the first steps
        steppers["torch.compile(model)"]()
    print(f"torch.compile: {time.perf_counter() - start:.0f} s to compile")
    times = {name: [] for name in steppers}
    for i in range(steps + 5):
        for name, step in steppers.items():
            times[name].append(step())
    median = {name: float(np.median(t[5:])) for name, t in times.items()}
    return {name: median["default"] / m for name, m in median.items() if name != "default"}


def cpu_kind() -> str:
    """The CPU kind as docs/speed.md's rows name it: 'AMX', 'AVX-512 bf16' or 'AVX2' (then runs are fp32)."""
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX-512 bf16"
    return torch.backends.cpu.get_cpu_capability().replace("AVX", "AVX-").replace("AVX-2", "AVX2")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "kind": cpu_kind(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_cpu": utils.native_bf16(torch.device("cpu")), "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per measurement")
    parser.add_argument("--episodes", type=int, default=10, help="eval episodes (1000 steps each)")
    parser.add_argument("--batch-size", type=int, default=CFG.train.batch_size)
    parser.add_argument("--context-len", type=int, default=CFG.buffer.context_len)
    parser.add_argument("--embed-dim", type=int, default=CFG.model.embed_dim)
    parser.add_argument("--n-layers", type=int, default=CFG.model.n_layers)
    parser.add_argument("--trajectories", type=int, default=1000, help="of 1000 steps, in the sampling benchmark")
    parser.add_argument("--out", help="the JSON file (default: bench.json, or bench-<n>.json if that exists)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--levers", choices=["fp32", "bf16"], help="only time issue 42's levers in this precision")
    args = parser.parse_args()
    if args.levers:
        threads.set_torch_threads(1)
        print(f"{cpu_kind()} CPU, hopper {args.levers} step, {args.steps} steps each, interleaved:")
        for name, ratio in levers(args.steps, args.levers).items():
            print(f"  {name:22s} {ratio:.2f}x the default step")
        return
    if args.out:
        utils.refuse_replacing(args.out, args.force)
    shape = dict(context_len=args.context_len, embed_dim=args.embed_dim, n_layers=args.n_layers)
    out = Path(args.out) if args.out else utils.new_path(Path("runs") / "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    threads.set_torch_threads(1)
    torch.manual_seed(0)
    default = utils.pick_precision(CFG.train.precision, torch.device("cpu"))  # what a default run uses here
    results = {"machine": machine(), "shape": {"batch_size": args.batch_size, **shape}, "default_precision": default,
               "train": {}}
    peak = {"fp32": matmul_gflops(torch.float32)}
    if utils.native_bf16(torch.device("cpu")):  # emulated bf16 is many times slower than fp32: not measured
        peak["bf16"] = matmul_gflops(torch.bfloat16)
    results["matmul_gflops"] = peak

    rows = []
    for env, (state_dim, act_dim) in SHAPES.items():
        config = default_model_config(state_dim, act_dim, **shape)
        model = DecisionTransformer(config)
        reference = ReferenceDT(config).load_project_weights(model)
        batch = random_batch(state_dim, act_dim, args.batch_size, args.context_len)
        ref_s = time_train_step(reference, batch, args.steps)
        ours = {p: time_train_step(model, batch, args.steps, precision=p) for p in peak}
        flops = train_step_flops(config, args.batch_size)
        for precision, seconds in ours.items():
            label = f"train step {env} project {precision}" + (" (default)" if precision == default else "")
            rows.append((label, seconds * 1e3, 1 / seconds, ref_s / seconds, flops / seconds / 1e9 / peak[precision]))
        results["train"][env] = {"reference_ms": ref_s * 1e3, **{f"{p}_ms": s * 1e3 for p, s in ours.items()},
                                 **{f"speedup_{p}": ref_s / s for p, s in ours.items()},
                                 "speedup_default": ref_s / ours[default], "gflop_per_step": flops / 1e9}
        rows.append((f"train step {env} reference fp32", ref_s * 1e3, 1 / ref_s, 1.0,
                     flops / ref_s / 1e9 / peak["fp32"]))
    hopper = results["train"]["hopper"]
    model = DecisionTransformer(default_model_config(*SHAPES["hopper"], **shape))
    share = matmul_share(model, random_batch(*SHAPES["hopper"], args.batch_size, args.context_len), default)
    hopper.update(matmul_share=share, matmul_only_speedup=hopper["reference_ms"] / (share * hopper[f"{default}_ms"]))
    results["batch_sampling_ms"] = sampling_seconds(*SHAPES["hopper"], trajectories=args.trajectories) * 1e3

    model = DecisionTransformer(default_model_config(17, 6, **shape))
    vec_rate, vec_s = eval_steps_per_second(model, args.episodes, vectorized=True)
    seq_rate, seq_s = eval_steps_per_second(model, args.episodes, vectorized=False)
    results["eval"] = {"episodes": args.episodes, "vectorized_s": vec_s, "sequential_s": seq_s,
                       "vectorized_steps_per_s": vec_rate, "sequential_steps_per_s": seq_rate,
                       "speedup": vec_rate / seq_rate}
    results["parallel_3_seeds_steps_per_s"] = parallel_steps_per_second(min(args.steps, 100), args.batch_size, shape,
                                                                        default)
    one_seed = 1e3 / hopper[f"{default}_ms"]

    m = results["machine"]
    print(f"machine: {m['kind']} CPU ({m['cpu']}, {m['cores']} cores, torch {m['torch']}); default precision {default}")
    print("matmul peak (1024^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print(f"{'measurement (' + m['kind'] + ')':42s} {'ms':>8s} {'per s':>8s} {'vs ref':>7s} {'of peak':>8s}")
    for name, ms, rate, ratio, frac in rows:
        print(f"{name:42s} {ms:8.1f} {rate:8.2f} {ratio:6.2f}x {frac:7.0%}")
    print(f"the hopper {default} step's matmuls: {hopper['matmul_share']:.0%} of its op time; a step of only these "
          f"matmuls would be {hopper['matmul_only_speedup']:.2f}x the reference")
    print(f"batch sampling (numpy, host): {results['batch_sampling_ms']:.2f} ms, "
          f"{results['batch_sampling_ms'] / results['train']['hopper'][f'{default}_ms']:.1%} of the hopper step")
    e = results["eval"]
    print(f"eval {args.episodes} x 1000 steps: vectorized {e['vectorized_s']:.1f} s ({e['vectorized_steps_per_s']:.0f} "
          f"steps/s), sequential {e['sequential_s']:.1f} s; ratio {e['speedup']:.2f}x")
    print(f"3 seeds in parallel processes ({default}): {results['parallel_3_seeds_steps_per_s']:.2f} training steps/s "
          f"in total, {results['parallel_3_seeds_steps_per_s'] / one_seed:.2f}x one process on every core")
    utils.atomic_write_bytes(out, json.dumps(results, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
