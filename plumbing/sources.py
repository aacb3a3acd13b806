"""Where a run's data comes from: D4RL files (found, downloaded, checked, hashed) and Minari datasets.

A new source adds its reader here and its name to cfgs/schema.py SOURCES (docs/extending.md).
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import minari
    from omegaconf import DictConfig

from cfgs.schema import DATASETS, ENVS

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{file}"
log = logging.getLogger(__name__)
KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(RuntimeError):
    """A dataset that cannot be found, fetched or read; the message names the fix."""


# ---------------------------------------------------------------------------------------------
# Finding, downloading and checking D4RL files


def dataset_file(env: str, dataset: str) -> str:
    """D4RL's file name, e.g. ('hopper', 'medium-replay') -> 'hopper_medium_replay-v2.hdf5'."""
    if env not in ENVS:
        raise DatasetError(f"unknown env '{env}': choose one of {', '.join(ENVS)} (env=<name>)")
    if dataset not in DATASETS:
        raise DatasetError(
            f"unknown dataset '{dataset}': choose one of {', '.join(DATASETS)} (buffer.dataset=<name>)")
    return f"{env}_{dataset.replace('-', '_')}-v2.hdf5"


def dataset_dir() -> Path:
    """$D4RL_DATASET_DIR if set, else d4rl's own cache ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def local_files() -> list[str]:
    """The .hdf5 files in dataset_dir(); DatasetError naming D4RL_DATASET_DIR where there are none."""
    files = sorted(str(p) for p in dataset_dir().glob("*.hdf5"))
    if not files:
        where = "D4RL_DATASET_DIR" if "D4RL_DATASET_DIR" in os.environ else "d4rl's cache; D4RL_DATASET_DIR is not set"
        raise DatasetError(f"no .hdf5 files in {dataset_dir()} ({where}): set D4RL_DATASET_DIR to the folder that "
                           f"holds the D4RL files")
    return files


def run_dataset_files(buffer_cfg: Mapping) -> list[Path] | None:
    """The D4RL files a run read, on this machine: each recorded file (buffer.files, or buffer.path), else a file
    of that name in the D4RL folder (a run copied from elsewhere); None for Minari data or where one is missing."""
    recorded = buffer_cfg.get("files") or as_list(buffer_cfg.get("path"))
    if not recorded or buffer_cfg.get("source", "d4rl") != "d4rl":
        return None
    found = [next((p for p in (Path(r), dataset_dir() / Path(r).name) if p.is_file()), None) for r in recorded]
    return None if None in found else found


def run_files(cfg: DictConfig, obs_dim: int, act_dim: int) -> list[str]:
    """The files a run reads: buffer.path's, the Minari dataset's folder, or the D4RL files of env + dataset
    (downloaded when missing)."""
    if cfg.buffer.path:
        return as_list(cfg.buffer.path)
    if cfg.buffer.source == "minari":
        return [str(load_minari(cfg.buffer.dataset).storage.data_path)]
    return [str(p) for p in find_dataset(cfg.env.name, cfg.buffer.dataset, obs_dim, act_dim)]


def as_list(paths: str | Sequence[str] | None) -> list[str]:
    """buffer.path as a list of files: one file, or several read in order as one dataset."""
    if not paths:
        return []
    return [paths] if isinstance(paths, str) else list(paths)


def read_d4rl(path: str | Path, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """The arrays of a D4RL-layout file, checked: keys, shapes for these space sizes, finite values.

    Raises DatasetError naming the fix for a missing, truncated, corrupt or mismatched file.
    """
    fix = "replace it with a good copy"  # a cached download is fetched again by find_dataset
    if not Path(path).is_file():
        raise DatasetError(f"{path}: no such file. Put the dataset there, or, for a run whose file moved, resume it "
                           f"with resume=<run> buffer.path=<the file's new place>")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in KEYS if k not in f]
            if missing:
                raise DatasetError(f"{path} lacks the D4RL keys {missing}: {fix}")
            for key in KEYS:
                check_layout(path, key, f[key])
            data = {k: f[k][:] for k in KEYS}  # reads every chunk: catches truncation
    except OSError as e:
        raise DatasetError(f"{path} is truncated or corrupt ({e}): {fix}") from e
    n = len(data["rewards"])
    expected = {"observations": (n, obs_dim), "actions": (n, act_dim), "rewards": (n,), "terminals": (n,),
                "timeouts": (n,)}
    for key, shape in expected.items():
        if data[key].shape != shape:
            raise DatasetError(f"{path}: '{key}' has shape {data[key].shape}, expected {shape} for this env "
                               f"(observation dim {obs_dim}, action dim {act_dim}); is it another env's file?")
    for key in ("observations", "actions", "rewards"):
        if not np.isfinite(data[key]).all():
            raise DatasetError(f"{path}: '{key}' holds NaN or inf values: {fix}")
    return data


def check_layout(path: str | Path, key: str, item: h5py.Dataset | h5py.Group) -> None:
    """DatasetError naming `key` unless it is an array of real numbers (terminals, timeouts: also booleans)."""
    kinds = "fiub" if key in ("terminals", "timeouts") else "fiu"  # float, int, unsigned, bool
    if not isinstance(item, h5py.Dataset):
        raise DatasetError(f"{path}: '{key}' is an HDF5 {type(item).__name__.lower()}, not an array: it should be an "
                           f"array of real numbers (float32), one a step, as in D4RL's files")
    if item.dtype.kind not in kinds:
        raise DatasetError(f"{path}: '{key}' holds {item.dtype} values: it should hold real numbers (float32"
                           f"{', or bool' if 'b' in kinds else ''}), as in D4RL's files")


def download(url: str, path: Path) -> Path:
    """Fetch `url` into a temporary file beside `path`; the caller renames it once checked."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {path.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url} ({e}). Download it by hand to {path}, or set "
            f"D4RL_DATASET_DIR to a folder that holds {path.name}") from e
    except BaseException:  # Ctrl-C: no partial file of hundreds of MB left in the cache
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def find_dataset(env: str, dataset: str, obs_dim: int, act_dim: int) -> list[Path]:
    """The checked D4RL file of env + dataset, downloaded into the cache when missing, truncated or corrupt; for
    medium-expert where only its medium and expert files are here, those two in that order (D4RL made it so)."""
    name = dataset_file(env, dataset)
    parts = [dataset_dir() / dataset_file(env, part) for part in ("medium", "expert")]
    if dataset == "medium-expert" and not (dataset_dir() / name).exists() and all(p.exists() for p in parts):
        return [find_file(env, part, obs_dim, act_dim) for part in ("medium", "expert")]
    return [find_file(env, dataset, obs_dim, act_dim)]


def find_file(env: str, dataset: str, obs_dim: int, act_dim: int) -> Path:
    """Path of a checked D4RL file; downloaded into the cache when missing, truncated or corrupt."""
    name = dataset_file(env, dataset)
    path = dataset_dir() / name
    if path.exists():
        try:
            read_d4rl(path, obs_dim, act_dim)
            return path
        except DatasetError as e:
            log.warning("%s; downloading it again", e)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"D4RL_DATASET_DIR={path.parent} cannot be created ({e.strerror}): set "
                           f"D4RL_DATASET_DIR to a folder you can write, or that holds {name}") from None
    tmp = download(D4RL_URL.format(file=name), path)
    try:
        read_d4rl(tmp, obs_dim, act_dim)
    except DatasetError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # only a complete, checked file ever has the final name
    return path


# ---------------------------------------------------------------------------------------------
# The data's identity: a run records its files' SHA-256 (buffer.sha256), and each read of them is checked against it.
# The bytes are hashed each time (a 75 MB file in well under a second): no cache keyed on size and mtime, which an
# edit in place that keeps both (cp -p, rsync -t) would pass.


def hash_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dataset_identity(files: Sequence[str] | None, recorded: Sequence[str] | None) -> list[str] | None:
    """The SHA-256 of each of the run's dataset files (None for a Minari folder); DatasetError when `recorded` (the
    run's buffer.sha256) names another: the run would train on other data. A seed checks its files so as it reads
    them (buffer.load_transitions); a missing file is left to the read, which names the fix."""
    if not files or not all(Path(f).is_file() for f in files):
        return None if recorded is None else list(recorded)
    if recorded and len(recorded) != len(files):
        raise DatasetError(f"buffer.path: {len(files)} files given, the run read {len(recorded)}: give the run's "
                           f"own files, in its order")
    shas = [hash_file(f) for f in files]
    for file, sha, was in zip(files, shas, recorded or [None] * len(files)):
        if was and sha != was:
            raise DatasetError(f"buffer.files: {file} changed since the run started (SHA-256 {was[:12]}... "
                               f"recorded, {sha[:12]}... now): put the run's file back, or start a new run on it")
    return shas


# ---------------------------------------------------------------------------------------------
# Minari datasets (D4RL's maintained successor): its MuJoCo ids mujoco/<env>/<name>-v<N>, recorded in gymnasium's
# -v5 envs, or any other id on disk (a user's own, e.g. made with minari's DataCollector)


def load_minari(dataset_id: str) -> minari.MinariDataset:
    """A Minari dataset on disk, or DatasetError naming the command that fetches it."""
    import minari
    try:
        return minari.load_dataset(dataset_id)
    except FileNotFoundError:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"Minari dataset {dataset_id} is not in {root} (MINARI_DATASETS_PATH): fetch it with "
                           f"`minari download {dataset_id}`") from None


def minari_ref_scores(metadata: dict) -> tuple[float, float] | None:
    """(ref_min_score, ref_max_score) of a Minari dataset's metadata, or None where it lacks either."""
    if metadata.get("ref_min_score") is None or metadata.get("ref_max_score") is None:
        return None
    return float(metadata["ref_min_score"]), float(metadata["ref_max_score"])


def expert_dataset_id(dataset_id: str) -> str | None:
    """The same env's Minari expert dataset of the newest version on disk, e.g. mujoco/hopper/expert-v0; or None."""
    import minari
    namespace = dataset_id.rsplit("/", 1)[0]  # mujoco/hopper
    experts = sorted((i for i in minari.list_local_datasets() if i.startswith(f"{namespace}/expert-v")),
                     key=lambda i: int(i.rsplit("-v", 1)[1]) if i.rsplit("-v", 1)[1].isdigit() else -1)
    return experts[-1] if experts else None


def reference_scores(dataset_id: str, metadata: dict, command_line: tuple[float, float] | None = None) -> tuple[float,
                     float, str]:
    """(ref_min_score, ref_max_score, ref_source) of a Minari dataset: its own; else those given on the command
    line; else its env's Minari expert dataset's, when that is on disk; else DatasetError naming both ways."""
    if (own := minari_ref_scores(metadata)) is not None:
        if command_line is not None:
            log.warning("%s has its own reference scores %s: env.ref_min_score and env.ref_max_score are ignored",
                        dataset_id, own)
        return (*own, "minari")
    if command_line is not None:
        return (*command_line, "command-line")
    expert = expert_dataset_id(dataset_id)
    if expert is not None and (scores := minari_ref_scores(load_minari(expert).storage.metadata)) is not None:
        log.info("%s has no reference scores: using those of %s, %s", dataset_id, expert, scores)
        return (*scores, "minari-expert")
    namespace = dataset_id.rsplit("/", 1)[0]
    expert = (f", or put {namespace}/expert-v0 on disk (`minari download {namespace}/expert-v0`)"
              if namespace.startswith("mujoco/") else "")  # Minari's own datasets have an expert one
    raise DatasetError(f"Minari dataset {dataset_id} has no reference scores (ref_min_score, ref_max_score): give "
                       f"them, e.g. env.ref_min_score=<a random policy's return> env.ref_max_score=<an expert's "
                       f"return>{expert}")


def minari_facts(dataset_id: str, command_line: tuple[float, float] | None = None) -> dict:
    """What a run takes from a local Minari dataset: its data folder, its env (id and kwargs) and reference scores.

    command_line: (ref_min_score, ref_max_score) given as overrides, used when the dataset has none (Minari's
    published MuJoCo datasets may have none). The normalized score then uses the scale ref_source names
    (cfgs/schema.py REF_SOURCES): Minari's (0: a random policy, 100: Minari's expert policy, both in -v5) or the user's.
    """
    dataset = load_minari(dataset_id)
    spec = dataset.spec.env_spec
    if spec is None:
        raise DatasetError(f"Minari dataset {dataset_id} lacks its env spec: a run needs the env to evaluate in")
    ref_min, ref_max, source = reference_scores(dataset_id, dataset.storage.metadata, command_line)
    return {"file": str(dataset.storage.data_path), "env_id": spec.id, "env_kwargs": dict(spec.kwargs or {}),
            "ref_min_score": ref_min, "ref_max_score": ref_max, "ref_source": source}
