"""The config's schema: a dataclass per section of cfgs/config.yaml (types and rules; values: cfgs/'s YAML files).
OmegaConf rejects a wrong type (`train.batch_size=abc`), `check(cfg)` a value that cannot work (`train.lr=-1`)."""
import contextlib
import importlib.util
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

ENVS = ("hopper", "halfcheetah", "walker2d")
DATASETS = ("medium", "medium-replay", "medium-expert", "expert", "random")
MODELS = ("models.DecisionTransformer", "models.ReferenceDT")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """What a field's value must be: a test and the words that say it."""
    holds: Callable[[Any], bool]
    says: str


POSITIVE = Rule(lambda v: math.isfinite(v) and v > 0, "must be > 0")
NON_NEGATIVE = Rule(lambda v: math.isfinite(v) and v >= 0, "must be >= 0")
FINITE = Rule(math.isfinite, "must be a finite number")
AT_LEAST_ONE = Rule(lambda v: v >= 1, "must be at least 1")
PERCENT = Rule(lambda v: math.isfinite(v) and 0 < v <= 100, "must be in (0, 100]")
PROBABILITY = Rule(lambda v: math.isfinite(v) and 0 <= v < 1, "must be in [0, 1)")
SEEDS = Rule(lambda v: len(v) > 0 and all(s >= 0 for s in v) and len(set(v)) == len(v),
             "give distinct seeds >= 0, e.g. seeds=[0] or seeds=[0,1,2]")
LOGGER = Rule(lambda v: "csv" in v and set(v) <= {"csv", "tensorboard", "wandb"}, "choose from csv, tensorboard, "
              "wandb, with csv (resume and the figure read it): e.g. logger=[csv,tensorboard]")
FILE_STEM = Rule(lambda v: re.fullmatch(r"[\w-]+", v) is not None, "use letters, digits, _ and - (a file name)")
THREADS = Rule(lambda v: v is None or v >= 1, "give null (the usable cores shared by the processes) or a count >= 1")
PATHS = Rule(lambda v: v is None or (isinstance(v, str) and v != "")
             or (OmegaConf.is_list(v) and len(v) > 0 and all(isinstance(p, str) and p for p in v)),
             "give a file, or a list of files read in order as one dataset: buffer.path=[a.hdf5,b.hdf5]")
DEVICE = Rule(lambda v: v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
              "choose auto, cpu, cuda, cuda:<index> or mps")


def one_of(choices: Sequence[str]) -> Rule:
    return Rule(lambda v: v in choices, f"choose one of {', '.join(choices)}")


def ruled(rule: Rule) -> Any:
    """A field with the rule its value must meet; its value comes from the YAML files in cfgs/."""
    return field(default=MISSING, metadata={"rule": rule})


@dataclass
class EnvConfig:
    """cfgs/env/<name>.yaml: the gymnasium env and the d4rl facts the score needs."""
    name: str = ruled(one_of(ENVS))
    id: str = MISSING  # gymnasium id, e.g. Hopper-v4
    target_return: float = ruled(FINITE)  # the return-to-go the policy is conditioned on at eval
    max_episode_len: int = ruled(POSITIVE)  # eval episodes' time limit (D4RL: 1000); timestep embedding size
    ref_min_score: float = ruled(FINITE)  # d4rl infos.py: random policy
    ref_max_score: float = ruled(FINITE)  # d4rl infos.py: expert policy
    assignment_bar: Dict[str, float] = MISSING  # per dataset: the 3-seed mean must exceed it
    dt_paper_score: Dict[str, float] = MISSING  # per dataset: Chen et al. 2021, Table 2


@dataclass
class BufferConfig:
    dataset: str = ruled(one_of(DATASETS))  # D4RL's file of env + dataset (plumbing/sources.py)
    path: Any = ruled(PATHS)  # a D4RL-layout hdf5 file, or a list read in order as one dataset; overrides dataset
    files: Optional[List[str]] = MISSING  # set at start: the files this run reads, in order (kept for resume)
    sha256: Optional[List[str]] = MISSING  # set at start: each file's SHA-256 (a resume on a changed file stops)
    context_len: int = ruled(POSITIVE)  # K: steps of history the model sees
    reward_scale: float = ruled(POSITIVE)  # returns-to-go are divided by this
    sample_by: str = ruled(one_of(("length", "uniform", "return")))  # length: every step equally likely
    top_percent: float = ruled(PERCENT)  # percentile behaviour cloning: keep the top x% by return
    holdout: float = ruled(PROBABILITY)  # a fraction of trajectories left out; evals then log the action MSE on them


@dataclass
class ModelConfig:
    implementation: str = ruled(one_of(MODELS))  # models.ReferenceDT: plain eager
    embed_dim: int = ruled(POSITIVE)
    n_layers: int = ruled(AT_LEAST_ONE)
    n_heads: int = ruled(POSITIVE)
    dropout: float = ruled(PROBABILITY)
    condition_on_return: bool = MISSING  # false: the return-to-go input is zeroed (plain BC, the DT paper's %BC)


@dataclass
class TrainConfig:
    steps: int = ruled(POSITIVE)
    batch_size: int = ruled(POSITIVE)
    lr: float = ruled(POSITIVE)
    weight_decay: float = ruled(NON_NEGATIVE)
    warmup_steps: int = ruled(POSITIVE)  # linear warmup of the lr
    lr_schedule: str = ruled(one_of(("constant", "cosine")))  # after the linear warm-up: constant, or cosine down to 0
    ema_decay: float = ruled(PROBABILITY)  # 0: off; else the policy evaluated and saved is an EMA of the weights
    grad_clip: float = ruled(POSITIVE)  # max global gradient norm
    aux_state_coef: float = ruled(NON_NEGATIVE)  # weight of the next-state prediction loss
    aux_rtg_coef: float = ruled(NON_NEGATIVE)  # weight of the next return-to-go prediction loss
    precision: str = ruled(one_of(("auto", "fp32", "bf16")))  # auto: bf16 where the hardware computes it natively
    threads: Optional[int] = ruled(THREADS)  # torch threads; null: the usable cores shared by the processes
    log_every: int = ruled(POSITIVE)
    eval_every: int = ruled(POSITIVE)
    checkpoint_every: int = ruled(POSITIVE)


@dataclass
class EvalConfig:
    episodes: int = ruled(POSITIVE)  # envs run in lockstep at each periodic eval
    final_episodes: int = ruled(POSITIVE)  # the final score, as the DT paper and CORL report it
    target_return: float = ruled(FINITE)
    video: bool = MISSING  # mp4 of the final policy (MUJOCO_GL=egl when headless)


@dataclass
class WandbConfig:
    """Weights & Biases, when logger=[csv,wandb]: one W&B run per seed, grouped by the run folder."""
    project: str = MISSING  # $WANDB_PROJECT wins over cfgs/config.yaml's default
    entity: Optional[str] = MISSING  # your W&B user or team ($WANDB_ENTITY); null: the default of `wandb login`
    mode: Optional[str] = ruled(Rule(lambda v: v in (None, "online", "offline", "disabled"), "choose online, offline "
                                     "or disabled, or null (W&B's own: $WANDB_MODE, else online)"))


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    seeds: List[int] = ruled(SEEDS)
    device: str = ruled(DEVICE)  # auto: cuda, then mps, then cpu
    resume: Optional[str] = MISSING  # runs/<date>/<time>: continue that run (with seeds=[...]: add seeds)
    logger: List[str] = ruled(LOGGER)  # where the metrics go: csv, and tensorboard, wandb
    wandb: WandbConfig = field(default_factory=WandbConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class EvaluateConfig:
    """cfgs/evaluate.yaml: evaluate.py's sweep of target returns over a run's saved policies."""
    run: str = MISSING  # the run folder, runs/<date>/<time>
    checkpoint: str = ruled(one_of(("final", "best")))  # each seed's final.pt or best.pt
    targets: Optional[List[float]] = MISSING  # the returns to condition on; null: 0.25x..1.5x the env's and the best
    episodes: int = ruled(POSITIVE)  # per target and seed, all in one vectorized pass per seed
    video: bool = MISSING  # one episode per target: seed<N>/<name>_<target>.mp4
    device: str = ruled(DEVICE)
    name: str = ruled(FILE_STEM)  # the outputs: <name>.csv, <name>.png, seed<N>/<name>.json
    export: bool = MISSING  # true: no sweep; each seed's policy as one ONNX file (tools/export.py)
    overwrite: bool = MISSING  # true: replace a stored sweep of this name made with other targets or episodes


RUN_FILE_STEMS = ("final", "best", "last", "results", "config", "summary", "train", "eval", "main", "video",
                  "error", "evaluate", "report")  # a run's own files: <stem>.*


def refuse_run_file_name(name: str) -> None:
    """evaluate.py's name=: ConfigError when its outputs would replace one of a run's own files."""
    if name.lower() in RUN_FILE_STEMS:
        raise ConfigError(f"name={name}: a run's own files are named so ({name}.*): choose another name, e.g. "
                          f"name=sweep_{name}")


# Where a run's files go: a new runs/<date>/<time> (resume=: that run's folder; plumbing/launch.py's resolvers). Every
# config.yaml names it in its defaults: python main.py --config-path runs/<date>/<time> --config-name config
RUN_FOLDER = {"run": {"dir": "${run_dir:${resume}}"},
              "sweep": {"dir": "${sweep_dir:}", "subdir": "${hydra.job.num}"},  # -m: runs/<date>/<time>-sweep/<job>/
              "job": {"name": "main",  # the log is main.log (main_mp.py: and each seed's seed<N>/train.log)
                      "chdir": True},  # work inside the run folder (stray files such as MUJOCO_LOG.TXT land there)
              "output_subdir": None}  # no .hydra/ copies: config.yaml is the run's record
DEFAULTS = ["schema", "run_folder", "_self_"]  # the defaults list of a config file
CFGS = Path(__file__).resolve().parent


def own_values(name: str) -> DictConfig:
    """cfgs/<name>.yaml's own values on its schema (Config or EvaluateConfig), without defaults, env and hydra."""
    values = OmegaConf.load(CFGS / f"{name}.yaml")
    for key in ("defaults", "hydra"):
        values.pop(key, None)
    return OmegaConf.merge(OmegaConf.structured(EvaluateConfig if name == "evaluate" else Config), values)


def defaults(env: Optional[str] = None) -> DictConfig:
    """What `python main.py env=<env>` starts from (else cfgs/config.yaml's env), unresolved, as Hydra composes it."""
    if env not in ENVS:
        listed = OmegaConf.load(CFGS / "config.yaml").defaults
        env = next(entry.env for entry in listed if OmegaConf.is_dict(entry) and "env" in entry)
    env_values = OmegaConf.load(CFGS / "env" / f"{env}.yaml")
    return OmegaConf.merge(OmegaConf.structured(Config), {"env": env_values}, own_values("config"))


# `schema` in a config's defaults: types, rules and cfgs/config.yaml's values (for keys an older run's config lacks)
ConfigStore.instance().store(name="schema", node=own_values("config"))
ConfigStore.instance().store(name="run_folder", node=RUN_FOLDER, package="hydra")
ConfigStore.instance().store(name="evaluate_schema", node=own_values("evaluate"))


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first field of a training config whose value cannot work."""
    check_fields(Config, cfg)
    import gymnasium as gym  # env.id: a gymnasium id of env.name's robot (Hopper-v4, or Hopper-v5 where spaces match)
    if cfg.env.id not in gym.registry or not cfg.env.id.lower().startswith(f"{cfg.env.name}-v"):
        versions = [i for i in gym.registry if i.lower().startswith(f"{cfg.env.name}-v")]
        raise ConfigError(f"env.id={cfg.env.id}: not a gymnasium id of {cfg.env.name}: choose one of "
                          f"{', '.join(sorted(versions)[-2:])}")
    if cfg.env.max_episode_len > D4RL_TIME_LIMIT:
        raise ConfigError(f"env.max_episode_len={cfg.env.max_episode_len}: at most {D4RL_TIME_LIMIT}, the time "
                          f"limit D4RL's reference scores assume (longer episodes' scores are not comparable)")
    check_return_to_go("eval.target_return", [cfg.eval.target_return], cfg.buffer.reward_scale)
    for key in ("eval_every", "checkpoint_every"):  # so that no checkpoint holds an unchecked loss
        if cfg.train[key] % cfg.train.log_every:
            raise ConfigError(f"train.{key}={cfg.train[key]}: must be a multiple of "
                              f"train.log_every={cfg.train.log_every}")
    if cfg.model.embed_dim % cfg.model.n_heads:
        raise ConfigError(f"model.n_heads={cfg.model.n_heads}: must divide model.embed_dim={cfg.model.embed_dim}")
    if cfg.buffer.context_len > cfg.env.max_episode_len:
        raise ConfigError(f"buffer.context_len={cfg.buffer.context_len}: must be at most the env's "
                          f"max_episode_len={cfg.env.max_episode_len}")
    if cfg.train.aux_rtg_coef and not cfg.model.condition_on_return:
        raise ConfigError(f"train.aux_rtg_coef={cfg.train.aux_rtg_coef}: the next return-to-go cannot be learnt "
                          f"with model.condition_on_return=false (its input is zeroed); set it to 0")
    if cfg.env.ref_max_score <= cfg.env.ref_min_score:
        raise ConfigError(f"env.ref_max_score={cfg.env.ref_max_score}: must exceed env.ref_min_score")
    for package in ("tensorboard", "wandb"):
        if package in cfg.logger and importlib.util.find_spec(package) is None:
            raise ConfigError(f"logger={list(cfg.logger)}: {package} is not installed: "
                              f"pip install -r requirements-extra.txt")


RTG_LIMIT = 1e4  # |return-to-go / reward_scale| the model is given: D4RL's best (hopper 3.2) x 3000; beyond, its
# embedding grows the attention's logits until they overflow (eval.target_return=1e30: every score NaN)
D4RL_TIME_LIMIT = 1000  # the episode length D4RL's reference scores (env.ref_min_score, ref_max_score) assume


def check_return_to_go(field_name: str, returns: Sequence[float], reward_scale: float) -> None:
    """ConfigError when a return to condition on, over reward_scale, lies beyond RTG_LIMIT."""
    for value in returns:
        if not math.isfinite(value) or abs(value / reward_scale) > RTG_LIMIT:
            raise ConfigError(f"{field_name}={value:g}: with buffer.reward_scale={reward_scale:g} it must lie "
                              f"within +-{RTG_LIMIT * reward_scale:g} (|return / reward_scale| <= {RTG_LIMIT:g})")


def check_fields(schema: type, node: DictConfig, prefix: str = "") -> None:
    """Raise ConfigError naming the first field of `node` that breaks its rule in the dataclass `schema`."""
    for f in fields(schema):
        value = node[f.name]
        if is_dataclass(f.type):
            check_fields(f.type, value, f"{prefix}{f.name}.")
        elif "rule" in f.metadata and not f.metadata["rule"].holds(value):
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            raise ConfigError(f"{prefix}{f.name}={shown}: {f.metadata['rule'].says}")


def to_yaml(cfg: DictConfig) -> str:
    """A run's config.yaml: the resolved config, with the defaults list that makes it a config file to re-run."""
    return OmegaConf.to_yaml(OmegaConf.create({"defaults": DEFAULTS})) + OmegaConf.to_yaml(cfg)


def typed(tree: Any) -> DictConfig:
    """A config on the schema, a key it lacks taking its env's default; ConfigError for wrong types and unknown keys."""
    try:
        tree = OmegaConf.to_container(OmegaConf.create(tree))
        return OmegaConf.merge(defaults((tree.get("env") or {}).get("name")), tree)
    except OmegaConfBaseException as e:
        raise ConfigError(one_line(e)) from None


def one_line(error: Exception) -> str:
    """An OmegaConf error as 'key: what is wrong'."""
    key, message = getattr(error, "full_key", None), str(error).splitlines()[0]
    return f"{key}: {message}" if key else message


# Configs are data: a shared config file (a run's config.yaml, any --config-path config) names no code to run

CODE_KEYS = ("_target_", "()")  # Hydra's instantiate and logging's dictConfig call whatever these name
HYDRA_DATA_KEYS = ("run", "sweep", "job", "output_subdir", "mode", "verbose")  # hydra.callbacks etc. run code
DEFAULTS_ALLOWED = ("schema", "run_folder", "evaluate_schema", "_self_", "env", "experiment")


def refuse_code_in_config(path: Union[str, Path], node: Optional[type] = None) -> None:
    """ConfigError if the config file `path`, read as plain YAML, names code or a key the dataclass `node` lacks."""
    path = Path(path)
    try:
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except (OSError, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{path}: not a readable YAML config ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: not a config (a YAML mapping of keys)")
    for key in code_keys(tree):
        raise ConfigError(f"{path}: {key} names code to run; a config is data: remove it")
    for key in (tree.get("hydra") or {}):
        if key not in HYDRA_DATA_KEYS:
            raise ConfigError(f"{path}: hydra.{key} is refused (it can run code); keep only hydra."
                              f"{', hydra.'.join(HYDRA_DATA_KEYS)}")
    for entry in tree.get("defaults") or []:
        group = next(iter(entry)) if isinstance(entry, dict) else entry
        if str(group).replace("override ", "").strip() not in DEFAULTS_ALLOWED:
            raise ConfigError(f"{path}: defaults entry {entry} is refused; a config's defaults are "
                              f"{', '.join(DEFAULTS_ALLOWED[:4])} (and env, experiment)")
    if node is not None:
        data = {k: v for k, v in tree.items() if k not in ("defaults", "hydra")}
        try:
            OmegaConf.merge(OmegaConf.structured(node), data)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: {one_line(e)}") from None


def code_keys(tree: Any, prefix: str = "") -> Iterator[str]:
    """The dotted names of every key in a plain config tree that names code (CODE_KEYS, hydra.callbacks)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if key in CODE_KEYS or name == "hydra.callbacks":
            yield name
        yield from code_keys(value, f"{name}.")


def refuse_code_in_argv(argv: Sequence[str]) -> None:
    """Before Hydra reads anything: no override names code, nor the config files --config-path/--config-dir name."""
    args = get_args_parser().parse_args(argv[1:])  # the command line as Hydra reads it
    for override in args.overrides:  # keys only, never values: run_target_nan is data
        with contextlib.suppress(HydraException):  # Hydra refuses it itself
            parsed = OverridesParser.create().parse_override(override)
            tree = getattr(parsed.value(), "list", parsed.value())  # a sweep's choices: each may be a dict
            for part in reversed(parsed.key_or_group.split(".")):
                tree = {part: tree}
            if any(code_keys(tree)):
                raise ConfigError(f"{override}: names code to run; a config is data: leave it out")
    node, name = (EvaluateConfig, "evaluate") if Path(argv[0]).stem == "evaluate" else (Config, "config")
    if args.config_path is not None:  # relative to the script's folder, as Hydra reads it
        name = (args.config_name or name).removesuffix(".yaml")
        refuse_code_in_config(Path(argv[0]).resolve().parent / args.config_path / f"{name}.yaml", node)
    if args.config_dir is not None:
        for path in sorted(Path(args.config_dir).rglob("*.yaml")):
            refuse_code_in_config(path)
