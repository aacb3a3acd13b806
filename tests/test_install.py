"""The lean install: each optional feature whose package is missing stops with one line naming the install line."""
import ast
import importlib.util
import os
import subprocess
import sys

import pytest

from cfgs import schema
from conftest import ROOT, compose

INSTALL_LINE = "pip install -r requirements-extra.txt"


@pytest.fixture
def missing(monkeypatch):
    """missing(*modules): those modules (and their submodules) look uninstalled to importlib.util.find_spec."""
    find_spec = importlib.util.find_spec

    def hide(*modules):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in modules
                            else find_spec(name, *a))
    return hide


@pytest.mark.parametrize("overrides, module, says", [
    (["logger=[csv,tensorboard]"], "tensorboard", "logger=['csv', 'tensorboard']: tensorboard is not installed"),
    (["logger=[csv,wandb]"], "wandb", "logger=['csv', 'wandb']: wandb is not installed"),
])
def test_a_chosen_tool_that_is_not_installed_names_the_install_line(missing, overrides, module, says):
    cfg = compose(*overrides)
    missing(module)
    with pytest.raises(schema.ConfigError) as error:
        schema.check(cfg)
    assert str(error.value) == f"{says}: {INSTALL_LINE}"


def test_importing_the_entry_points_changes_nothing_and_none_imports_another():
    code = ("import os; from omegaconf import OmegaConf; before = os.environ.get('PYTHONPATH'); "
            "import main, main_mp, evaluate; "
            "assert os.environ.get('PYTHONPATH') == before, 'PYTHONPATH changed'; "
            "assert not [r for r in ('run_dir', 'sweep_dir', 'existing_run') if OmegaConf.has_resolver(r)]")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for script in ("main_mp.py", "evaluate.py"):
        imported = {alias.name for node in ast.walk(ast.parse((ROOT / script).read_text()))
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        assert "main" not in imported, script


def test_pyproject_declares_no_install_it_cannot_deliver():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert "build-system" not in project and not project["tool"]["setuptools"]["py-modules"]
    assert not project["project"]["dependencies"] and "optional-dependencies" not in project["project"]
