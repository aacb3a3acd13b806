"""The lean install: each optional feature whose package is missing stops with one line naming the install line."""
import importlib.util

import pytest

import main
from cfgs import schema
from conftest import compose

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
    (["buffer.source=minari", "buffer.dataset=mujoco/hopper/medium-v0"], "minari",
     "buffer.source=minari: minari is not installed"),
])
def test_a_chosen_tool_that_is_not_installed_names_the_install_line(missing, overrides, module, says):
    cfg = compose(*overrides)
    missing(module)
    with pytest.raises(schema.ConfigError) as error:
        schema.check(cfg)
    assert str(error.value) == f"{says}: {INSTALL_LINE}"


@pytest.mark.parametrize("message, package", [
    ("In 'hydra/launcher/parallel': Could not load 'hydra/launcher/joblib'.", "hydra-joblib-launcher"),
    ("In 'hydra/config': Could not find 'hydra/launcher/submitit_local'", "hydra-submitit-launcher"),
])
def test_a_launcher_whose_plugin_is_not_installed_names_the_install_line(missing, message, package):
    missing("hydra_plugins")
    assert main.missing_launcher(message) == f"this hydra/launcher needs {package}: {INSTALL_LINE}"


def test_a_launcher_error_with_its_plugin_installed_is_left_as_hydra_says_it():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    assert main.missing_launcher("In 'hydra/launcher/parallel': Could not load 'hydra/launcher/joblib'.") is None
