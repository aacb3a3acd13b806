"""What the entry points share: a run's start (folder locked, config checked, one-line errors), a study's jobs, cli."""
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import utils
from buffer import load_transitions
from cfgs import schema
from cfgs.schema import ConfigError
from plumbing import folder_lock, signals
from plumbing.errors import advice, composition_error
from plumbing.runfolder import Run, RunError
from plumbing.sources import DatasetError, dataset_identity, run_files

log = logging.getLogger(__name__)
FATAL = (ConfigError, DatasetError, RunError)  # the same for every seed, and for a resumed run: stop, no resume
_claimed = {}  # folder -> whether this process created it (else only its main.log): removed if the start fails
failed_jobs = []  # a study's failed jobs (number, folder, line, exit code): cli reports them when the study ends
_started_here = False  # the command line's hydra.run.chdir=false chose the run's folder (cli: starts_here)


def run_folder(resume):
    """hydra.run.dir: the folder of the run that resume= names, else a new, unique runs/<date>/<time>."""
    if resume and not Run(resume).holds_run():
        raise ConfigError(f"resume={resume}: no run there (no config.yaml); give a run folder such as "
                          f"resume=runs/<date>/<time>")
    folder = resume or Run.claim_new_folder(time.strftime("runs/%Y-%m-%d/%H-%M-%S"))
    folder_lock.lock_run_folder(folder)  # before Hydra writes its log there
    if not resume:
        _claimed[Path(folder).resolve()] = True
    return folder


def discard_failed_start(run):
    """After a failed start: the folder this process made, if it holds only the log; in one that was there, the log."""
    folder = run.dir.resolve()
    made = _claimed.get(folder)
    if made is None or made and any(p.name != "main.log" for p in folder.iterdir()):
        return
    (folder / "main.log").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # up to the first that is not empty: runs/<date>/<time>, runs/<date>, runs
        for empty in (folder, folder.parent, folder.parent.parent) if made else ():
            empty.rmdir()


def setup():
    """Before Hydra composes: the resolvers of the run's and a study's folders."""
    OmegaConf.register_new_resolver("run_dir", run_folder, use_cache=True, replace=True)
    sweep = "runs/%Y-%m-%d/%H-%M-%S-sweep"  # a study's hydra.sweep.dir, new and unique; its jobs are run folders
    OmegaConf.register_new_resolver("sweep_dir", lambda: Run.claim_new_folder(time.strftime(sweep)), use_cache=True,
                                    replace=True)


def shown(path):
    """`path` as the user would type it: relative to where they started, when it lies below."""
    path, started = Path(os.path.abspath(path)), Path(os.path.abspath(get_original_cwd()))
    return str(path.relative_to(started) if path.is_relative_to(started) else path)


def prepare(cfg):
    """The run folder and its checked config (a resumed run's own, plus any seeds added), saved as config.yaml."""
    run = Run(to_absolute_path(cfg.resume) if cfg.resume else HydraConfig.get().runtime.output_dir)
    folder_lock.lock_run_folder(run.dir)  # one process per run folder, before anything is written
    if cfg.resume:
        cfg = resumed_config(cfg, run, [o.lstrip("+") for o in HydraConfig.get().overrides.task])
        for path in [*run.dir.glob(".*.tmp"), *run.dir.glob("seed*/.*.tmp")]:  # left by a killed atomic write
            path.unlink(missing_ok=True)
    else:
        refuse_used_folder(run, list(cfg.seeds))
    if cfg.buffer.path and schema.PATHS.holds(cfg.buffer.path):  # relative to where the user started
        paths = [to_absolute_path(p) for p in utils.as_list(cfg.buffer.path)]
        cfg.buffer.path = paths[0] if isinstance(cfg.buffer.path, str) else paths
    if "D4RL_DATASET_DIR" in os.environ:
        os.environ["D4RL_DATASET_DIR"] = to_absolute_path(os.environ["D4RL_DATASET_DIR"])
    OmegaConf.resolve(cfg)
    schema.check(cfg)
    if cfg.train.warmup_steps > cfg.train.steps:  # a short run: its learning rate reaches train.lr at its end
        log.info("train.warmup_steps=%d capped at train.steps=%d", cfg.train.warmup_steps, cfg.train.steps)
        cfg.train.warmup_steps = cfg.train.steps
    if cfg.eval.video and (problem := utils.rendering_problem()):  # before the folder holds a run, not after training
        raise ConfigError(f"eval.video=true: {problem}")
    for path in utils.as_list(cfg.buffer.path):
        if not Path(path).is_file():
            moved = f"; if the run's file moved: resume={shown(run.dir)} buffer.path=<its new place>"
            raise ConfigError(f"buffer.path: {path}: no such file{moved if cfg.resume else ''}")
    device = utils.pick_device(cfg.device)
    cfg.train.precision = utils.pick_precision(cfg.train.precision, device)  # the run records what it used
    env = gym.make(cfg.env.id)
    if not (cfg.resume and cfg.buffer.files):  # the run records the files it read
        dims = env.observation_space.shape[0], env.action_space.shape[0]
        cfg.buffer.files = [str(Path(p).resolve()) for p in run_files(cfg, *dims)]  # one download, before seeds
    cfg.buffer.sha256 = dataset_identity(cfg.buffer.files, cfg.buffer.sha256)  # the data's identity, kept
    load_transitions(cfg, env)  # bad data is refused before the run exists
    run.save_config(schema.to_yaml(cfg))
    log.info("%s %s: %s, seeds %s, device %s, %s", "resumed" if cfg.resume else "started", shown(run.dir),
             utils.run_title(cfg), list(cfg.seeds), device, cfg.train.precision)
    return cfg, run


def refuse_used_folder(run, seeds):
    """RunError for a folder that holds a run, lies inside one, or holds what a run writes."""
    option = "hydra.run.chdir=false" if _started_here else "hydra.run.dir"
    where = f"{option} (the folder you started in)" if _started_here else f"{option}={shown(run.dir)}"
    new = f"leave {option} out for a new folder"
    if run.holds_run():
        raise RunError(f"{where} holds a run already: continue it with resume={shown(run.dir)}, or {new}")
    if outer := next((Run(folder) for folder in run.dir.parents if Run(folder).holds_run()), None):
        raise RunError(f"{where} lies inside the run {shown(outer.dir)}: choose a folder outside it ({new})")
    written = ["results.png", "summary.json", *(run.seed(seed).dir.name for seed in seeds)]
    if in_the_way := [name for name in written if (run.dir / name).exists()]:
        raise RunError(f"{where} holds what a run writes ({', '.join(in_the_way)}): move that away, or choose "
                       f"another folder ({new})")


def resumed_config(cfg, run, overrides):
    """The run's saved config; seeds= adds seeds, buffer.path= names the new place of the run's files."""
    schema.refuse_code_in_config(run.config_path())  # unknown keys: run.config() below
    saved = run.config()
    if any(o.startswith("seeds=") for o in overrides):
        saved.seeds = sorted(set(saved.seeds) | set(cfg.seeds))
    if any(o.startswith("buffer.path=") for o in overrides):
        saved.buffer.path, saved.buffer.files = cfg.buffer.path, None  # prepare records the files read there
    summarized = False
    with contextlib.suppress(RunError):  # a damaged summary.json: the resume writes it again
        summarized = run.summary() is not None
    if summarized and all(run.seed(seed).final() is not None for seed in saved.seeds):  # before the log's first line
        print(f"{shown(run.dir)}: every seed {list(saved.seeds)} finished already (scores in summary.json): nothing "
              f"to do; add seeds with seeds=[...]")
        raise SystemExit(0)
    if ignored := [o for o in overrides if not o.startswith(("resume=", "seeds=", "buffer.path="))]:
        log.warning("resume: the run keeps its own config; ignoring %s", " ".join(ignored))
    saved.resume = cfg.resume
    return saved


class Failed(SystemExit):
    """A run's end on an error, with its one line (cli prints it; a study's job reports it) and exit code."""

    def __init__(self, line: str, code: int = 1):
        super().__init__(code)
        self.line = line


def fail(message, code=1):
    """Log the one-line error (main.log keeps it) and end with it (Failed)."""
    log.error(message)
    raise Failed(message, code)


@contextlib.contextmanager
def stop_on_write_errors(run: Run, resume: str) -> Iterator[None]:
    """A failed write (with `resume`, the command) or a vanished run folder ends the run in one line."""
    try:
        try:
            yield
        except utils.WriteError as e:
            run.check_present()  # a vanished folder: FolderVanished, its own line
            fail(f"error: {e}; then resume with: {resume}")
    except RunError as e:
        fail(f"error: {e}")


def errors_to_the_log_file_only():
    """Errors go to the log file, not the console (fail prints their one line); an unwritable log line is dropped."""
    logging.raiseExceptions = False
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console; not the log file (a FileHandler)
            handler.addFilter(lambda record: record.levelno < logging.ERROR)


def start(cfg):
    """Signals caught, the config checked and the run folder prepared: (cfg, run); or a one-line error and exit."""
    errors_to_the_log_file_only()
    signals.stop_on_signals()
    try:
        return prepare(cfg)
    except Exception as e:  # noqa: BLE001  a value, file, folder or machine that cannot work: no run folder is left
        told = f"{e}" if isinstance(e, (*FATAL, utils.WriteError)) else advice(e)
        if not isinstance(e, RunError):  # else the folder is another run's, or holds its files: nothing written there
            log.error("error: %s", told or e, exc_info=not told)
        discard_failed_start(Run(HydraConfig.get().runtime.output_dir))
        if told is None:
            raise
        raise Failed(f"error: {told}") from None


def job(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    """An entry point's task: in a study (-m), a job that fails goes to failed_jobs (cli reports it); the next runs."""

    @functools.wraps(task)
    def study_job(cfg: DictConfig) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return task(cfg)
        number, folder = hydra_cfg.job.num, shown(hydra_cfg.runtime.output_dir)
        try:
            task(cfg)
        except Failed as e:
            failed_jobs.append((number, folder, e.line, e.code))
        except SystemExit as e:  # 0: nothing to do
            if e.code:
                raise
        except Exception as e:  # noqa: BLE001  a crash: its traceback goes to the job's main.log
            log.exception("error")
            failed_jobs.append((number, folder, f"error: {type(e).__name__}: {e} (its traceback: main.log)", 1))

    return study_job


def cli(hydra_main):
    """Call a @hydra.main function: a composition error, a failed run or each failed job of a study in one line."""
    global _started_here
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its report of several lines
    _started_here = starts_here(sys.argv[1:])
    sys.argv = [sys.argv[0], *assignment_chdir(sys.argv[1:], os.getcwd())]
    try:
        schema.refuse_code_in_argv(sys.argv)  # configs are data: checked before Hydra acts on them
        named = existing_run_dir(sys.argv[1:])
        if named and not (named / "main.log").exists():
            _claimed[named] = False  # its main.log is this start's
        hydra_main()
    except Failed as e:
        print(e.line, file=sys.stderr)
        raise SystemExit(e.code) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise SystemExit(f"error: {composition_error(e)}") from None
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    for _, folder, line, _ in sorted(failed_jobs):  # its folder, then its own line
        print(f"{folder}: {line}", file=sys.stderr)
    if failed_jobs:
        raise SystemExit(max(code for *_, code in failed_jobs))


def assignment_chdir(args, cwd):
    """`args` with hydra.run.chdir=<bool> as hydra.job.chdir, and with false hydra.run.dir=<cwd> (starts_here)."""
    given = [arg for arg in args if arg.startswith("hydra.run.chdir=")]
    if not given:
        return args
    here = [f"hydra.run.dir={quoted(cwd)}"] if starts_here(args) else []
    return [*(arg for arg in args if arg not in given), f"hydra.job.chdir={given[-1].split('=', 1)[1]}", *here]


def starts_here(args):
    """Does hydra.run.chdir=false put the run in the folder started in (no hydra.run.dir= or resume= names another)?"""
    given = [arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.chdir=")]
    return bool(given) and given[-1].strip().lower() == "false" and not any(
        arg.startswith(("hydra.run.dir=", "resume=")) for arg in args)


def existing_run_dir(args):
    """The folder the (last) hydra.run.dir= names (unquoted as Hydra reads it, resolved) if it exists, else None;
    ConfigError when none can be made there (a file, a long name)."""
    given = [arg for arg in args if arg.startswith("hydra.run.dir=")]
    value = OverridesParser.create().parse_override(given[-1]).value() if given else None
    if not isinstance(value, str):  # none given, or a sweep's choices: no one folder
        return None
    folder = Path(value).resolve()
    for path in (folder, *folder.parents):  # the nearest that exists must be a folder
        try:
            if path.exists() and not path.is_dir():
                raise ConfigError(f"hydra.run.dir={folder}: {path} is a file, not a folder: give a folder (or a new "
                                  f"one's name) there")
            if path.exists():
                return folder if path == folder else None
        except OSError as e:  # a name too long
            raise ConfigError(f"hydra.run.dir={folder}: {e.strerror}: give a shorter folder name") from None
    return None


def quoted(value):
    """`value` as a quoted string of Hydra's override grammar (spaces, commas, brackets kept as they are)."""
    return "'" + value.replace("'", "\\'") + "'"
