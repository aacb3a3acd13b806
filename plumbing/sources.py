"""Where a run's data comes from: D4RL files, found, downloaded, checked and hashed (others: docs/extending.md)."""
import hashlib
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from utils import as_list

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{file}"
log = logging.getLogger(__name__)
KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(RuntimeError):
    """A dataset that cannot be found, fetched or read; the message names the fix."""


def dataset_file(env: str, dataset: str) -> str:
    """D4RL's file name, e.g. ('hopper', 'medium-replay') -> 'hopper_medium_replay-v2.hdf5'."""
    return f"{env}_{dataset.replace('-', '_')}-v2.hdf5"


def dataset_dir() -> Path:
    """$D4RL_DATASET_DIR if set, else d4rl's own cache ~/.d4rl/datasets."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def run_dataset_files(buffer_cfg: Mapping) -> list[Path] | None:
    """The D4RL files a run read, here or in the D4RL folder (a copied run); None where one is missing."""
    recorded = buffer_cfg.get("files") or as_list(buffer_cfg.get("path"))
    if not recorded:
        return None
    found = [next((p for p in (Path(r), dataset_dir() / Path(r).name) if p.is_file()), None) for r in recorded]
    return None if None in found else found


def run_files(cfg: DictConfig, obs_dim: int, act_dim: int) -> list[str]:
    """The files a run reads: buffer.path's, or the D4RL files of env + dataset."""
    given = as_list(cfg.buffer.path)
    return given or [str(path) for path in find_dataset(cfg.env.name, cfg.buffer.dataset, obs_dim, act_dim)]


def read_d4rl(path: str | Path, obs_dim: int, act_dim: int) -> dict[str, np.ndarray]:
    """The checked arrays of a D4RL-layout file; DatasetError naming the fix for a missing, bad or mismatched file."""
    fix = "replace it with a good copy"  # a cached download is fetched again by find_dataset
    if not Path(path).is_file():
        raise DatasetError(f"{path}: no such file. Put the dataset there, or, for a run whose file moved, resume it "
                           f"with resume=<run> buffer.path=<the file's new place>")
    try:
        with h5py.File(path, "r") as f:
            if missing := [k for k in KEYS if k not in f]:
                raise DatasetError(f"{path} lacks the D4RL keys {missing}: {fix}")
            for key in KEYS:
                kinds = "fiub" if key in ("terminals", "timeouts") else "fiu"  # float, int, unsigned, bool
                if not isinstance(f[key], h5py.Dataset):
                    raise DatasetError(f"{path}: '{key}' is an HDF5 {type(f[key]).__name__.lower()}, not an array: "
                                       f"it should be an array of real numbers (float32), one a step, as in D4RL's "
                                       f"files")
                if f[key].dtype.kind not in kinds:
                    raise DatasetError(f"{path}: '{key}' holds {f[key].dtype} values: it should hold real numbers "
                                       f"(float32{', or bool' if 'b' in kinds else ''}), as in D4RL's files")
            data = {k: f[k][:] for k in KEYS}  # reads every chunk: catches truncation
    except OSError as e:
        raise DatasetError(f"{path} is truncated or corrupt ({e}): {fix}") from e
    n = len(data["rewards"])
    for key in KEYS:
        shape = {"observations": (n, obs_dim), "actions": (n, act_dim)}.get(key, (n,))
        if data[key].shape != shape:
            raise DatasetError(f"{path}: '{key}' has shape {data[key].shape}, expected {shape} for this env "
                               f"(observation dim {obs_dim}, action dim {act_dim}); is it another env's file?")
    for key in ("observations", "actions", "rewards"):
        if not np.isfinite(data[key]).all():
            raise DatasetError(f"{path}: '{key}' holds NaN or inf values: {fix}")
    return data


def find_dataset(env: str, dataset: str, obs_dim: int, act_dim: int) -> list[Path]:
    """The checked D4RL file of env + dataset; medium-expert: its medium and expert files where only they are."""
    whole, parts = dataset_dir() / dataset_file(env, dataset), [dataset_dir() / dataset_file(env, part)
                                                                for part in ("medium", "expert")]
    if dataset == "medium-expert" and not whole.exists() and all(p.exists() for p in parts):
        return [find_file(env, part, obs_dim, act_dim) for part in ("medium", "expert")]
    return [find_file(env, dataset, obs_dim, act_dim)]


def find_file(env: str, dataset: str, obs_dim: int, act_dim: int) -> Path:
    """A checked D4RL file in the cache, downloaded when missing, truncated or corrupt."""
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
    url, tmp = D4RL_URL.format(file=name), path.with_name(f"{name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
                while chunk := response.read(1 << 20):
                    bar.update(out.write(chunk))
        read_d4rl(tmp, obs_dim, act_dim)
    except BaseException as e:  # failed, corrupt or stopped (Ctrl-C): no partial file of hundreds of MB is left
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise DatasetError(f"could not download {url} ({e}). Download it by hand to {path}, or set "
                               f"D4RL_DATASET_DIR to a folder that holds {name}") from e
        raise
    os.replace(tmp, path)  # only a complete, checked file ever has the final name
    return path


def hash_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), hashed again at each read (75 MB in well under a second): no cache keyed on
    size and mtime, which an edit in place (cp -p, rsync -t) would pass."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def dataset_identity(files: Sequence[str] | None, recorded: Sequence[str] | None) -> list[str] | None:
    """The SHA-256 of each dataset file (None where one is missing: the read names the fix); DatasetError where
    `recorded` (the run's buffer.sha256) names another: the run would train on other data."""
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
