"""Speed benchmark: the project's training step and eval against a plain eager reference, in one run.

    python bench.py                     # prints a table, writes bench.json
    python bench.py --steps 100 --out /tmp/bench.json

The reference is models.ReferenceDT (nn.MultiheadAttention, torch's dropout, every token through every block).

Every ratio compares two measurements taken in the same process on the same machine.
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import core
import runlock
import utils
from buffer import SequenceBuffer, Transitions
from cfgs.schema import Config
from models import DecisionTransformer, DTConfig, ReferenceDT

CFG = OmegaConf.structured(Config)  # the defaults of cfgs/config.yaml (a test checks that they agree)
SHAPES = {"hopper": (11, 3), "walker2d": (17, 6)}  # (state dim, action dim) of the -v4 envs


def default_model_config(state_dim, act_dim, **overrides):
    """The default config's model (cfgs/config.yaml) for these space sizes."""
    m = CFG.model
    return DTConfig(**{**dict(state_dim=state_dim, act_dim=act_dim, context_len=CFG.buffer.context_len,
                              embed_dim=m.embed_dim, n_layers=m.n_layers, n_heads=m.n_heads, dropout=m.dropout),
                       **overrides})


def random_batch(state_dim, act_dim, batch_size=CFG.train.batch_size, K=CFG.buffer.context_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch_size, K, state_dim, generator=g), torch.rand(batch_size, K, act_dim, generator=g) * 2 - 1,
            torch.randn(batch_size, K, 1, generator=g), torch.randint(0, 1000, (batch_size, K), generator=g),
            torch.ones(batch_size, K))


def time_train_step(model, batch, steps, precision="fp32"):
    """Median seconds of core.train_step (forward, backward, clip, AdamW) with the default config."""
    optimizer = model.configure_optimizer(CFG.train.lr, CFG.train.weight_decay)
    scheduler = core.warmup_scheduler(optimizer, CFG.train.warmup_steps)
    model.train()
    times = []
    for i in range(steps + 10):
        start = time.perf_counter()
        core.train_step(model, optimizer, scheduler, batch, CFG.train, precision)[0].item()
        if i >= 10:  # warm-up
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_step_flops(config, batch_size=CFG.train.batch_size):
    """Matmul FLOPs of one training step of the plain model (forward x 3 for forward + backward)."""
    T, C, L = 3 * config.context_len, config.embed_dim, config.n_layers
    per_token_layer = 2 * 12 * C * C  # qkv 3C^2, proj C^2, MLP 8C^2; 2 FLOPs per multiply-add
    attention = 2 * 2 * T * C  # scores and weighted sum, per token (full T; causal halves the useful part)
    return 3 * batch_size * T * L * (per_token_layer + attention)


def sampling_seconds(state_dim, act_dim, reps=500, trajectories=1000, length=1000):
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


def matmul_gflops(dtype, n=1024, reps=30):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def eval_steps_per_second(model, episodes, vectorized):
    """Env steps per second of HalfCheetah-v4 (it never falls, so every episode lasts 1000 steps)."""
    model.eval()
    start = time.perf_counter()
    if vectorized:
        core.rollout(model, "HalfCheetah-v4", episodes, 0, 6000, 1000)
    else:
        for i in range(episodes):
            core.rollout(model, "HalfCheetah-v4", 1, i, 6000, 1000)
    seconds = time.perf_counter() - start
    return episodes * 1000 / seconds, seconds


def _parallel_worker(steps, num_processes, batch_size, shape, precision, queue):
    utils.set_torch_threads(num_processes)
    model = DecisionTransformer(default_model_config(*SHAPES["hopper"], **shape))
    batch = random_batch(*SHAPES["hopper"], batch_size, shape["context_len"])
    queue.put(1.0 / time_train_step(model, batch, steps, precision))


def parallel_steps_per_second(steps, batch_size, shape, precision, num_processes=3):
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


def machine():
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_cpu": utils.native_bf16(torch.device("cpu")), "device": "cpu"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per measurement")
    parser.add_argument("--episodes", type=int, default=10, help="eval episodes (1000 steps each)")
    parser.add_argument("--batch-size", type=int, default=CFG.train.batch_size)
    parser.add_argument("--context-len", type=int, default=CFG.buffer.context_len)
    parser.add_argument("--embed-dim", type=int, default=CFG.model.embed_dim)
    parser.add_argument("--n-layers", type=int, default=CFG.model.n_layers)
    parser.add_argument("--trajectories", type=int, default=1000, help="of 1000 steps, in the sampling benchmark")
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    runlock.refuse_replacing(args.out, args.force)
    utils.set_torch_threads(1)
    torch.manual_seed(0)
    shape = dict(context_len=args.context_len, embed_dim=args.embed_dim, n_layers=args.n_layers)
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
    results["batch_sampling_ms"] = sampling_seconds(*SHAPES["hopper"], trajectories=args.trajectories) * 1e3

    model = DecisionTransformer(default_model_config(17, 6, **shape))
    vec_rate, vec_s = eval_steps_per_second(model, args.episodes, vectorized=True)
    seq_rate, seq_s = eval_steps_per_second(model, args.episodes, vectorized=False)
    results["eval"] = {"episodes": args.episodes, "vectorized_s": vec_s, "sequential_s": seq_s,
                       "vectorized_steps_per_s": vec_rate, "sequential_steps_per_s": seq_rate,
                       "speedup": vec_rate / seq_rate}
    results["parallel_3_seeds_steps_per_s"] = parallel_steps_per_second(min(args.steps, 100), args.batch_size, shape,
                                                                        default)
    one_seed = 1e3 / results["train"]["hopper"][f"{default}_ms"]

    print(f"machine: {results['machine']}; default precision here: {default}")
    print("matmul peak (1024^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print(f"{'measurement':42s} {'ms':>8s} {'per s':>8s} {'vs ref':>7s} {'of peak':>8s}")
    for name, ms, rate, ratio, frac in rows:
        print(f"{name:42s} {ms:8.1f} {rate:8.2f} {ratio:6.2f}x {frac:7.0%}")
    print(f"batch sampling (numpy, host): {results['batch_sampling_ms']:.2f} ms, "
          f"{results['batch_sampling_ms'] / results['train']['hopper'][f'{default}_ms']:.1%} of the hopper step")
    e = results["eval"]
    print(f"eval {args.episodes} x 1000 steps: vectorized {e['vectorized_s']:.1f} s ({e['vectorized_steps_per_s']:.0f} "
          f"steps/s), sequential {e['sequential_s']:.1f} s; ratio {e['speedup']:.2f}x")
    print(f"3 seeds in parallel processes ({default}): {results['parallel_3_seeds_steps_per_s']:.2f} training steps/s "
          f"in total, {results['parallel_3_seeds_steps_per_s'] / one_seed:.2f}x one process on every core")
    utils.atomic_write_bytes(args.out, json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
