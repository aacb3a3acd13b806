"""Speed benchmark: the project's training step and eval against a plain eager reference, in one run.

    python tools/bench.py                     # prints a table, writes bench.json
    python tools/bench.py --steps 100 --out /tmp/bench.json
    python tools/bench.py --busy 0 1 2        # the step beside 0, 1, 2 CPU-bound competitors, per thread setting

The reference is models.ReferenceDT (nn.MultiheadAttention, torch's dropout, every token through every block).

Every ratio compares two measurements taken in the same process on the same machine.
"""
import sys  # noqa: I001
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules, run as tools/bench.py
from plumbing import threads  # noqa: I001,E402  first, before torch loads: it sets OpenMP's wait policy (threads.py says why)

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import time
from typing import Any, Callable, Iterator

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


def train_stepper(model: torch.nn.Module, batch: tuple, precision: str = "fp32") -> Callable[[], float]:
    """A function that runs one core.train_step (forward, backward, clip, AdamW; the default config's optimizer
    and schedule) on `batch` and returns its seconds."""
    optimizer = model.configure_optimizer(CFG.train.lr, CFG.train.weight_decay)
    scheduler = core.lr_scheduler(optimizer, CFG.train)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        core.train_step(model, optimizer, scheduler, batch, CFG.train, precision)[0].item()
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

# --busy: the step beside N CPU-bound competitors, for the default thread policy and each setting compared to it
ALL = "all"  # OMP_NUM_THREADS: every usable core
BUSY_SETTINGS = {  # name -> the OpenMP environment its process starts with; the default: what threads.py chooses
    "default": {}, "1 thread": {"OMP_NUM_THREADS": "1"},
    "all cores, active": {"OMP_NUM_THREADS": ALL, "OMP_WAIT_POLICY": "ACTIVE"},
    "all cores, passive": {"OMP_NUM_THREADS": ALL, "OMP_WAIT_POLICY": "PASSIVE"},
    "all cores, spin 1k": {"OMP_NUM_THREADS": ALL, "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"},
    "all cores, spin 10k": {"OMP_NUM_THREADS": ALL, "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"},
    # libgomp's default without OMP_WAIT_POLICY (what runs waited before threads.py): spin 300 000 times, then sleep
    "all cores, spin 300k": {"OMP_NUM_THREADS": ALL, "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "300000"}}
OPENMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
COMPETITOR = """import sys, time
end = time.monotonic() + float(sys.argv[1])
try:
    while time.monotonic() < end:
        pass
except KeyboardInterrupt:
    pass
"""


def end_processes(procs: list) -> None:
    """Terminate `procs` (stopped ones too), then kill those still alive after 5 s; return once all have exited."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def competitors(n: int, seconds: float) -> Iterator[list]:
    """`n` CPU-bound processes (a busy loop each) that end by themselves after `seconds` and are ended when the
    block is left, however it is left (an exception, Ctrl-C, SIGTERM through busy_main's handler)."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", COMPETITOR, str(seconds)]))
        yield procs
    finally:
        end_processes(procs)


def start_setting(name: str, batch_size: int, shape: dict) -> subprocess.Popen:
    """A process of `python tools/bench.py --worker` with the setting's environment; it reports its thread line."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV}
    env.update({k: str(threads.usable_cores()) if v == ALL else v for k, v in BUSY_SETTINGS[name].items()})
    args = ["--batch-size", str(batch_size), "--context-len", str(shape["context_len"]),
            "--embed-dim", str(shape["embed_dim"]), "--n-layers", str(shape["n_layers"])]
    return subprocess.Popen([sys.executable, __file__, "--worker", name, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def time_setting(proc: subprocess.Popen, steps: int) -> dict:
    """Seconds of each of `steps` training steps in a setting's process. Between its turns the process is stopped
    (SIGSTOP): OpenMP threads that wait actively would otherwise spin through the other settings' turns."""
    proc.send_signal(signal.SIGCONT)
    try:
        proc.stdin.write(f"{steps}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
    except BrokenPipeError:
        line = ""
    if not line:
        raise RuntimeError(f"bench.py --worker (pid {proc.pid}) ended with code {proc.wait()}")
    proc.send_signal(signal.SIGSTOP)
    return json.loads(line)


def busy_worker(batch_size: int, shape: dict) -> None:
    """--worker: a setting's process. The default precision's step on a hopper batch, timed on request: each
    line on stdin asks for n steps, each answer is a JSON list of their seconds. Where a run's threads would follow
    the load (no OMP_NUM_THREADS; core.thread_governor), so do this process's, measured from the start of each turn
    (it is stopped between turns), after two untimed steps."""
    policy = threads.set_torch_threads(1)
    torch.manual_seed(0)
    precision = utils.pick_precision(CFG.train.precision, torch.device("cpu"))
    model = DecisionTransformer(default_model_config(*SHAPES["hopper"], **shape))
    batch = random_batch(*SHAPES["hopper"], batch_size, shape["context_len"])
    step = train_stepper(model, batch, precision)
    most = torch.get_num_threads()
    follows = isinstance(core.thread_governor(CFG, model, list(batch), precision), threads.Governor)
    policy += "; threads follow the load" if follows else ""
    for _ in range(5):  # warm-up
        step()
    count = f"1-{most} (follow the load)" if follows else most
    print(json.dumps({"threads": count, "policy": policy, "precision": precision}), flush=True)
    try:
        for request in sys.stdin:
            governor = threads.Governor(most, every=0.25) if follows else lambda: None
            for _ in range(2):
                governor()
                step()
            print(json.dumps([governor() or step() for _ in range(int(request))]), flush=True)
    except KeyboardInterrupt:  # the benchmark ends this process itself
        pass


def busy_level(workers: dict, n: int, steps: int, rounds: int, seconds: float) -> dict:
    """The step's median ms per setting beside `n` competitors, the settings interleaved round by round."""
    with competitors(n, seconds) as procs:
        print(f"{n} competitors: pids {' '.join(str(p.pid) for p in procs)}", flush=True)
        time.sleep(1.0)  # the competitors are running
        times = {name: [] for name in workers}
        for _ in range(rounds):
            for name, proc in workers.items():
                times[name] += time_setting(proc, max(1, steps // rounds))
        ended_early = sum(p.poll() is not None for p in procs)
        load = os.getloadavg()[0]
    return {"competitors": n, "load_1min": load, "competitor_pids": [p.pid for p in procs],
            "competitors_ended_early": ended_early, "ms": {k: float(np.median(v)) * 1e3 for k, v in times.items()}}


def busy_table(results: dict) -> str:
    """The markdown table of --busy: per load level and setting, ms a step and the ratios to the default and to
    the best setting at that level."""
    lines = ["| competitors | load (1 min) | setting | threads, wait | ms / step | / default | / best |",
             "|---|---|---|---|---|---|---|"]
    for level in results["levels"]:
        best = min(level["ms"].values())
        for name, ms in level["ms"].items():
            setting = results["settings"][name]
            lines.append(f"| {level['competitors']} | {level['load_1min']:.1f} | {name} | {setting['threads']}, "
                         f"{setting['wait']} | {ms:.1f} | {ms / level['ms']['default']:.2f} | {ms / best:.2f} |")
    return "\n".join(lines)


def busy_main(args: argparse.Namespace, shape: dict, out: Path) -> None:
    """--busy: start a process per setting, then for each N time them beside N competitors; a table and JSON."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so that the competitors end
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even where the parent ignored SIGINT
    workers = {}
    try:
        workers["default"] = start_setting("default", args.batch_size, shape)
        lines = {"default": workers["default"].stdout.readline()}  # started alone: it sees the machine as it is
        workers.update({name: start_setting(name, args.batch_size, shape) for name in BUSY_SETTINGS
                        if name != "default"})
        settings = {}
        for name, proc in workers.items():
            line = lines.get(name) or proc.stdout.readline()
            if not line:
                raise SystemExit(f"error: bench.py --worker {name!r} failed (code {proc.wait()}); see above")
            proc.send_signal(signal.SIGSTOP)  # until its turn
            ready = json.loads(line)
            wait = ready["policy"].rsplit(" wait ", 1)[-1].split(" (")[0]  # without the why
            settings[name] = {"threads": ready["threads"], "wait": wait, "policy": ready["policy"],
                              "precision": ready["precision"]}
        print(f"settings' processes: pids {' '.join(str(p.pid) for p in workers.values())}", flush=True)
        results = {"machine": machine(), "shape": {"batch_size": args.batch_size, **shape}, "settings": settings,
                   "steps": args.steps, "rounds": args.rounds,
                   "levels": [busy_level(workers, n, args.steps, args.rounds, args.busy_seconds) for n in args.busy]}
    finally:
        end_processes(list(workers.values()))
    print(f"machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; hopper step, "
          f"{settings['default']['precision']}; default: {settings['default']['policy']}")
    print(busy_table(results))
    for level in results["levels"]:
        if level["competitors_ended_early"]:
            print(f"warning: {level['competitors_ended_early']} of {level['competitors']} competitors ended (time "
                  f"limit) before the level's last measurement: raise --busy-seconds")
    utils.atomic_write_bytes(out, json.dumps(results, indent=2).encode())
    print(f"wrote {out}")


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_cpu": utils.native_bf16(torch.device("cpu")), "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="timed training steps per measurement (default 200; --busy: 30, "
                        "a setting's steps at each load, spread over the rounds)")
    parser.add_argument("--episodes", type=int, default=10, help="eval episodes (1000 steps each)")
    parser.add_argument("--batch-size", type=int, default=CFG.train.batch_size)
    parser.add_argument("--context-len", type=int, default=CFG.buffer.context_len)
    parser.add_argument("--embed-dim", type=int, default=CFG.model.embed_dim)
    parser.add_argument("--n-layers", type=int, default=CFG.model.n_layers)
    parser.add_argument("--trajectories", type=int, default=1000, help="of 1000 steps, in the sampling benchmark")
    parser.add_argument("--busy", type=int, nargs="+", metavar="N",
                        help="only the busy-machine comparison: the step beside N CPU-bound competitors, per setting")
    parser.add_argument("--rounds", type=int, default=3, help="--busy: rounds of interleaved measurements")
    parser.add_argument("--busy-seconds", type=float, default=600, help="--busy: competitors end after this long")
    parser.add_argument("--out", help="the JSON file (default: bench.json, or bench-<n>.json if that exists)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a setting's process of --busy
    args = parser.parse_args()
    if args.out:
        utils.refuse_replacing(args.out, args.force)
    shape = dict(context_len=args.context_len, embed_dim=args.embed_dim, n_layers=args.n_layers)
    if args.worker:
        return busy_worker(args.batch_size, shape)
    out = Path(args.out) if args.out else utils.new_path(Path("runs") / "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.busy:
        args.steps = args.steps or 30  # a spinning setting beside 2 competitors may take seconds a step
        return busy_main(args, shape, out)
    args.steps = args.steps or 200
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

    print(f"machine: {results['machine']}; default precision here: {default}")
    print("matmul peak (1024^3): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print(f"{'measurement':42s} {'ms':>8s} {'per s':>8s} {'vs ref':>7s} {'of peak':>8s}")
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
