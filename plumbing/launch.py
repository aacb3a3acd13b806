"""What the entry points share below them: the start of a run (its folder, claimed and locked; its checked config;
one-line errors), a multirun's jobs (job: one failed job leaves the others running; cli: one line per failed job),
the command line (cli), and how a failure that no resume can fix is told (advice).

setup() is called by each entry point before anything else of Hydra: the project on PYTHONPATH (a launcher's job
finds it) and the resolvers of hydra.run.dir and hydra.sweep.dir.
"""
import contextlib
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gymnasium as gym
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import core
import utils
from buffer import load_transitions
from cfgs import schema
from cfgs.schema import ConfigError
from plumbing import folder_lock, signals, threads
from plumbing.errors import LAUNCHER_PLUGINS, advice, composition_error, missing_launcher
from plumbing.runfolder import Run, RunError
from plumbing.sources import DatasetError, as_list, dataset_identity, minari_facts, run_files

log = logging.getLogger(__name__)
FATAL = (ConfigError, DatasetError, RunError)  # the same for every seed, and for a resumed run: stop, no resume
_claimed = {}  # folder -> whether this process created it (else only its main.log): removed if the start fails
failed_jobs = []  # a study's FailedJob, as they reach this process: cli reports them when the study ends
_started_here = False  # the command line's hydra.run.chdir=false chose the run's folder (cli: starts_here)


def run_folder(resume):
    """hydra.run.dir: the folder of the run that resume= names, else a new, unique runs/<date>/<time>."""
    if resume:
        if not Run(resume).holds_run():
            raise ConfigError(f"resume={resume}: no run there (no config.yaml); give a run folder such as "
                              f"resume=runs/<date>/<time>")
        folder_lock.lock_run_folder(resume)  # before Hydra writes its log there
        return resume
    folder = Run.claim_new_folder(time.strftime("runs/%Y-%m-%d/%H-%M-%S"))
    folder_lock.lock_run_folder(folder)
    _claimed[Path(folder).resolve()] = True
    return folder


def discard_failed_start(run):
    """After a start that failed before training: the folder this process claimed for it, when it holds nothing
    but the log, is removed (and runs/<date>/, runs/ when empty), so that no run folder is left behind; in the
    folder started in (hydra.run.chdir=false), the main.log this start created."""
    folder = run.dir.resolve()
    if folder not in _claimed or _claimed[folder] and any(p.name != "main.log" for p in folder.iterdir()):
        return
    (folder / "main.log").unlink(missing_ok=True)
    if not _claimed[folder]:
        return
    for empty in (folder, folder.parent, folder.parent.parent):  # runs/<date>/<time>, runs/<date>, runs
        try:
            empty.rmdir()
        except OSError:  # not empty
            return


def sweep_folder():
    """hydra.sweep.dir of a multirun (a study): a new, unique runs/<date>/<time>-sweep; its jobs are run folders."""
    return Run.claim_new_folder(time.strftime("runs/%Y-%m-%d/%H-%M-%S-sweep"))


def setup():
    """Before Hydra composes: the project on PYTHONPATH (a launcher's job, submitit's, starts a new interpreter that
    unpickles the entry point's function and must find the project) and the resolvers of hydra.run.dir and
    hydra.sweep.dir (run_folder, sweep_folder). Each entry point calls it once; repeating it changes nothing."""
    project = str(Path(__file__).resolve().parents[1])
    if project not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (project, os.environ.get("PYTHONPATH"))))
    OmegaConf.register_new_resolver("run_dir", run_folder, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("sweep_dir", sweep_folder, use_cache=True, replace=True)


def shown(path):
    """`path` as the user would type it: relative to where they started, when it lies below."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(os.path.abspath(get_original_cwd())))
    except ValueError:
        return str(path)


def typed_option():
    """What the command line typed to choose the run's folder: the assignment's hydra.run.chdir=false, else
    hydra.run.dir."""
    return "hydra.run.chdir=false" if _started_here else "hydra.run.dir"


def as_typed(folder):
    """The run's folder as the command line chose it (typed_option)."""
    return "hydra.run.chdir=false (the folder you started in)" if _started_here else f"hydra.run.dir={shown(folder)}"


def prepare(cfg):
    """The run folder and its checked config (a resumed run's own, plus any seeds added), saved as config.yaml."""
    run = Run(to_absolute_path(cfg.resume) if cfg.resume else HydraConfig.get().runtime.output_dir)
    folder_lock.lock_run_folder(run.dir)  # one process per run folder, before anything is written
    overrides = [o.lstrip("+") for o in HydraConfig.get().overrides.task]
    job = submitit_job()
    if not cfg.resume and run.holds_run() and requeued_job(cfg, run, job):
        log.info("%s: this job's own folder (submitit requeued job %s): resuming it", shown(run.dir), job)
        cfg.resume, overrides = str(run.dir), []
    if cfg.resume:
        cfg = resumed_config(cfg, run, overrides)
        folder_lock.remove_stray_temporaries(run.dir)
    elif run.holds_run():
        raise RunError(f"{as_typed(run.dir)} holds a run already: continue it with resume={shown(run.dir)}, or "
                       f"leave {typed_option()} out for a new folder")
    elif outer := run.enclosing_run():
        raise RunError(f"{as_typed(run.dir)} lies inside the run {shown(outer.dir)}: choose a folder outside it "
                       f"(leave {typed_option()} out for a new one)")
    elif in_the_way := run.outputs_present(list(cfg.seeds)):
        raise RunError(f"{as_typed(run.dir)} holds what a run writes ({', '.join(in_the_way)}): move that away, or "
                       f"choose another folder (leave {typed_option()} out for a new one)")
    elif job:
        run.save_job(job)
    if cfg.buffer.path and schema.PATHS.holds(cfg.buffer.path):
        cfg.buffer.path = absolute_paths(cfg.buffer.path)
    for variable in ("D4RL_DATASET_DIR", "MINARI_DATASETS_PATH"):  # relative to where the user started
        if variable in os.environ:
            os.environ[variable] = to_absolute_path(os.environ[variable])
    OmegaConf.resolve(cfg)
    schema.check(cfg)
    if cfg.train.warmup_steps > cfg.train.steps:  # a short run: its learning rate reaches train.lr at its end
        log.info("train.warmup_steps=%d capped at train.steps=%d", cfg.train.warmup_steps, cfg.train.steps)
        cfg.train.warmup_steps = cfg.train.steps
    if cfg.eval.video and (problem := utils.rendering_problem()):  # before the folder holds a run, not after training
        raise ConfigError(f"eval.video=true: {problem}")
    if not cfg.resume:
        take_reference_scores(cfg, overrides)
    for path in as_list(cfg.buffer.path):
        if not Path(path).is_file():
            moved = f"; if the run's file moved: resume={shown(run.dir)} buffer.path=<its new place>" if cfg.resume else ""
            raise ConfigError(f"buffer.path: {path}: no such file{moved}")
    device = utils.pick_device(cfg.device)
    cfg.train.precision = utils.pick_precision(cfg.train.precision, device)  # the run records what it used
    if not (cfg.resume and cfg.buffer.files or cfg.buffer.source == "minari"):  # the run records the files it read
        dims = core.space_dims(gym.make(cfg.env.id))
        cfg.buffer.files = [str(Path(p).resolve()) for p in run_files(cfg, *dims)]  # one download, before seeds
    cfg.buffer.sha256 = dataset_identity(cfg.buffer.files, cfg.buffer.sha256)  # the data's identity, kept
    load_transitions(cfg, gym.make(core.env_spec(cfg.env)))  # bad data is refused before the run exists
    run.save_config(schema.to_yaml(cfg))
    log.info("%s %s: %s, seeds %s, device %s, %s", "resumed" if cfg.resume else "started", shown(run.dir),
             utils.run_title(cfg), list(cfg.seeds), device, cfg.train.precision)
    return cfg, run


def command_line_scores(cfg, overrides):
    """(env.ref_min_score, env.ref_max_score) when given as overrides, else None; ConfigError for one alone."""
    keys = ("env.ref_min_score", "env.ref_max_score")
    given = [key for key in keys if any(o.startswith(f"{key}=") for o in overrides)]
    if len(given) == 1:
        raise ConfigError(f"{given[0]} given alone: give env.ref_min_score and env.ref_max_score together")
    return (float(cfg.env.ref_min_score), float(cfg.env.ref_max_score)) if given else None


def take_reference_scores(cfg, overrides):
    """env.ref_*_score and env.ref_source (their scale): a Minari dataset's (and its env, kwargs included), the
    command line's, or D4RL's of cfgs/env/<name>.yaml."""
    scores = command_line_scores(cfg, overrides)
    if cfg.buffer.source == "minari":  # the env and the score's scale are the dataset's
        for key, value in minari_facts(cfg.buffer.dataset, scores).items():
            OmegaConf.update(cfg, key, value, merge=False)
        schema.check(cfg)  # its reference scores too
    elif scores:
        cfg.env.ref_source = "command-line"


def exit_if_finished(cfg, run):
    """A resumed run whose every seed has its final evaluation: one line, exit 0, nothing written; unless its
    summary.json is missing or damaged (a full disk), which the resume writes again."""
    try:
        summarized = run.summary() is not None
    except RunError:
        summarized = False
    if summarized and all(run.seed(seed).final() is not None for seed in cfg.seeds):
        print(f"{shown(run.dir)}: every seed {list(cfg.seeds)} finished already (scores in summary.json): nothing "
              f"to do; add seeds with seeds=[...]")
        raise SystemExit(0)


def submitit_job():
    """This process's submitit job id (kept when submitit requeues the job), or None outside a submitit job."""
    if "submitit" not in sys.modules:  # a submitit launcher's job runs inside submitit, which imported it
        return None
    import submitit
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # submitit is imported, but this is no job of it
        return None


def absolute_paths(paths):
    """buffer.path (a file, or a list of them) relative to where the user started, in its own form."""
    absolute = [to_absolute_path(p) for p in as_list(paths)]
    return absolute[0] if isinstance(paths, str) else absolute


def requeued_job(cfg, run, job):
    """Is `run` this submitit job's own earlier attempt (submitit requeues a preempted job into its folder)?"""
    if job is None or run.job() != job:
        return False
    saved, fresh = run.saved_config(), OmegaConf.to_container(cfg, resolve=True)
    if fresh["buffer"]["path"]:
        fresh["buffer"]["path"] = absolute_paths(fresh["buffer"]["path"])
    for config in (saved, fresh):  # what prepare() fills in
        config["buffer"]["files"] = config["buffer"]["sha256"] = config["train"]["precision"] = config["resume"] = None
        config["env"]["id"] = config["env"]["ref_min_score"] = config["env"]["ref_max_score"] = None  # minari
        config["env"]["ref_source"] = config["env"]["kwargs"] = None
    return saved == fresh


def parallel_jobs():
    """How many jobs of this multirun share the machine (Hydra's joblib launcher: n_jobs); else 1."""
    hydra_cfg = HydraConfig.get()
    n_jobs = (hydra_cfg.launcher.get("n_jobs") or 1) if hydra_cfg.mode == RunMode.MULTIRUN else 1
    return n_jobs if n_jobs > 0 else max(1, threads.usable_cores() + 1 + n_jobs)  # joblib: -1 = every core


def resumed_config(cfg, run, overrides):
    """The run's saved config in today's schema (newer keys take their defaults); seeds= adds seeds; buffer.path=
    names the new place of the run's files, taken when their bytes are the recorded ones (prepare checks)."""
    schema.refuse_code_in_config(run.config_path())  # unknown keys: typed_config() below
    saved = run.typed_config()
    if any(o.startswith("seeds=") for o in overrides):
        saved.seeds = sorted(set(saved.seeds) | set(cfg.seeds))
    if any(o.startswith("buffer.path=") for o in overrides):
        saved.buffer.path, saved.buffer.files = cfg.buffer.path, None  # prepare records the files read there
    exit_if_finished(saved, run)  # before the first line of the log
    ignored = [o for o in overrides if not o.startswith(("resume=", "seeds=", "buffer.path="))]
    if ignored:
        log.warning("resume: the run keeps its own config; ignoring %s", " ".join(ignored))
    saved.resume = cfg.resume
    return saved


def summarize(cfg, run):
    """summary.json and the figure from the seeds' final.json; the score line in the log."""
    summary = run.summarize(cfg.env.name, utils.dataset_name(cfg), list(cfg.seeds))
    run.plot(cfg)
    if summary["seeds"]:
        spread = "" if summary["score_std"] is None else f" +- {summary['score_std']:.1f}"
        log.info("%s: normalized score %.1f%s over seeds %s (final evals of %d episodes)", utils.run_title(cfg),
                 summary["score_mean"], spread, summary["seeds"], cfg.eval.final_episodes)
    return summary


class Failed(SystemExit):
    """A run's end on an error: its one line, which cli prints on stderr (a study's job hands it to the study's
    report instead: job), and its exit code."""

    def __init__(self, line: str, code: int = 1):
        super().__init__(code)
        self.line = line


def fail(message, code=1):
    """Log the one-line error (main.log keeps it; errors_to_the_log_file_only) and end with it (Failed)."""
    log.error(message)
    raise Failed(message, code)


@contextlib.contextmanager
def stop_on_write_errors(resume: str) -> Iterator[None]:
    """A write that fails (a full disk, a read-only folder) ends the run in one line naming the file and the fix;
    what is written stays, and `resume` (the command) continues from it. A run folder that vanished: one line."""
    try:
        yield
    except utils.WriteError as e:
        fail(f"error: {e}; then resume with: {resume}")
    except RunError as e:
        fail(f"error: {e}")


def errors_to_the_log_file_only():
    """Hydra's console handler (stdout) leaves out errors: each is printed once, as one line on stderr (fail), and
    kept with its details (a traceback) in the log file. A log line that cannot be written (a full disk) is dropped
    without a traceback: the one-line error says why."""
    logging.raiseExceptions = False
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console; not the log file (a FileHandler)
            handler.addFilter(lambda record: record.levelno < logging.ERROR)


def start(cfg):
    """Signals caught from here on, the config checked and the run folder prepared: (cfg, run); a one-line
    error and exit on a value or folder that cannot work. main_mp.py starts the same way."""
    errors_to_the_log_file_only()
    signals.stop_on_signals()
    try:
        return prepare(cfg)
    except RunError as e:  # the folder belongs to another run, or holds files a run writes: nothing written there
        discard_failed_start(Run(HydraConfig.get().runtime.output_dir))
        raise Failed(f"error: {e}") from None
    except Exception as e:  # noqa: BLE001  a value, file or machine that cannot work: no run folder is left
        told = f"{e}" if isinstance(e, (*FATAL, utils.WriteError)) else advice(e)
        log.error("error: %s", told or e, exc_info=not told)
        discard_failed_start(Run(HydraConfig.get().runtime.output_dir))
        if told is None:
            raise
        raise Failed(f"error: {told}") from None


class FailedJob:
    """A study's job (a multirun's) that ended on an error, as the job's return value: Hydra's launchers run the
    other jobs on (a raised error stops the basic launcher, and the joblib launcher kills the running jobs). Each one
    made in this process (a job of the basic launcher) or unpickled here (a job's result from a worker of the joblib
    or submitit launcher) is kept in failed_jobs, which cli reports when the study ends."""

    def __init__(self, number: int, folder: str, line: str, code: int):
        self.number, self.folder, self.line, self.code = number, folder, line, code
        failed_jobs.append(self)

    def __reduce__(self) -> tuple:  # unpickled, it is made (and kept) again by __init__
        return FailedJob, (self.number, self.folder, self.line, self.code)


def job(task: Callable[[DictConfig], None]) -> Callable[[DictConfig], FailedJob | None]:
    """An entry point's task, below @hydra.main. In a multirun (a study) any end on an error returns a FailedJob with
    its one line, and the other jobs run on; a job in a worker process of the joblib launcher dies with the study's
    process (no orphan goes on writing). Outside a multirun, the task as it is."""

    @functools.wraps(task)
    def study_job(cfg: DictConfig) -> FailedJob | None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return task(cfg)
        if hydra_cfg.launcher._target_.startswith(LAUNCHER_PLUGINS["joblib"][1]):
            folder_lock.die_with_parent(multiprocessing.parent_process().pid)
        failed = functools.partial(FailedJob, hydra_cfg.job.num, shown(hydra_cfg.runtime.output_dir))
        try:
            task(cfg)
        except Failed as e:
            return failed(e.line, e.code)
        except SystemExit as e:  # 0: nothing to do; else submitit's exit once it requeued the job, for it to handle
            if e.code:
                raise
        except Exception as e:  # noqa: BLE001  a crash: its traceback goes to the job's main.log
            log.exception("error")
            return failed(f"error: {type(e).__name__}: {e} (its traceback: main.log)", 1)
        return None

    return study_job


def report_failed_jobs() -> None:
    """The end of a study whose jobs failed (failed_jobs): one line for each (its folder, then its own line: the
    cause, and how to resume one a resume continues), in job order; the exit code is the highest of theirs."""
    for failed in sorted(failed_jobs, key=lambda failed: failed.number):
        print(f"{failed.folder}: {failed.line}", file=sys.stderr)
    raise SystemExit(max(failed.code for failed in failed_jobs))


def cli(hydra_main):
    """Call a @hydra.main function: a command line Hydra cannot compose ends in one line that names the key, a run
    that failed in its one line (Failed), and a study (a multirun) whose jobs failed in one line for each.

    The assignment's hydra.run.chdir=<bool> is taken as the key Hydra 1.3 has for it (assignment_chdir).
    """
    global _started_here
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its report of several lines
    _started_here = starts_here(sys.argv[1:])
    sys.argv = [sys.argv[0], *assignment_chdir(sys.argv[1:], os.getcwd())]
    signals.pass_stops_to_children()  # in a study: the joblib launcher's workers checkpoint and stop
    try:
        schema.refuse_code_in_argv(sys.argv)  # configs are data: checked before Hydra acts on them
        named = named_run_dir(sys.argv[1:])
        if named and existing_folder(named) and not (named / "main.log").exists():
            _claimed[named] = False  # its main.log is this start's
        hydra_main()
    except Failed as e:
        print(e.line, file=sys.stderr)
        raise SystemExit(e.code) from None
    except (HydraException, OmegaConfBaseException) as e:
        message = composition_error(e)
        raise SystemExit(f"error: {missing_launcher(message) or message}") from None
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    if failed_jobs:
        report_failed_jobs()


def assignment_chdir(args, cwd):
    """The command line `args` with the assignment's hydra.run.chdir=<bool> in Hydra 1.3's keys: hydra.job.chdir,
    and with false the run's folder is the one started in (hydra.run.dir=<cwd>), unless hydra.run.dir= or resume=
    names another. prepare() still refuses a folder that holds a run."""
    given = [arg for arg in args if arg.startswith("hydra.run.chdir=")]
    kept = [arg for arg in args if arg not in given]
    if not given:
        return kept
    value = given[-1].split("=", 1)[1]
    return [*kept, f"hydra.job.chdir={value}", *([f"hydra.run.dir={quoted(cwd)}"] if starts_here(args) else [])]


def starts_here(args):
    """Does the command line's hydra.run.chdir=false put the run in the folder started in (no hydra.run.dir= or
    resume= names another)?"""
    given = [arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.chdir=")]
    return bool(given) and given[-1].strip().lower() == "false" and not any(
        arg.startswith(("hydra.run.dir=", "resume=")) for arg in args)


def existing_folder(folder):
    """Whether the folder hydra.run.dir names exists; ConfigError naming why no folder can be made there: a file at
    or above it, or a name too long for the file system."""
    for path in (folder, *folder.parents):  # the nearest that exists must be a folder
        try:
            if path.exists() and not path.is_dir():
                raise ConfigError(f"hydra.run.dir={folder}: {path} is a file, not a folder: give a folder (or a new "
                                  f"one's name) there")
            if path.exists():
                return path == folder
        except OSError as e:  # a name too long
            raise ConfigError(f"hydra.run.dir={folder}: {e.strerror}: give a shorter folder name") from None
    return False


def quoted(value):
    """`value` as a quoted string of Hydra's override grammar (spaces, commas, brackets kept as they are)."""
    return "'" + value.replace("'", "\\'") + "'"


def named_run_dir(args):
    """The folder the command line's (last) hydra.run.dir= names, resolved, as quoted() or plainly; else None."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.dir=")]
    if not values:
        return None
    value = values[-1]
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].replace("\\" + value[0], value[0])
    return Path(value).resolve()
