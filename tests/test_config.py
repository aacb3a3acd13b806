"""Every default is written once, in the YAML files of cfgs/; cfgs/schema.py's dataclasses hold types and rules."""
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import fields, is_dataclass

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, OmegaConf

from cfgs import schema


def leaf_fields(node, prefix=""):
    """(dotted name, dataclass field) of every value field of the dataclass `node`, nested sections walked."""
    for f in fields(node):
        if is_dataclass(f.type):
            assert f.default_factory is f.type, f"{prefix}{f.name}: a section is its dataclass, with no values"
            yield from leaf_fields(f.type, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


@pytest.mark.parametrize("node", [schema.Config, schema.EvaluateConfig])
def test_no_default_is_written_in_both_the_schema_and_the_yaml(node):
    leaves = dict(leaf_fields(node))
    assert len(leaves) > 8
    written = {name: f.default for name, f in leaves.items()
               if f.default != MISSING or f.default_factory is not NO_DEFAULT}
    assert not written, f"defaults written in cfgs/schema.py, not in the YAML: {written}"


@pytest.mark.parametrize("env", schema.ENVS)
def test_the_yaml_files_give_every_field_of_the_training_schema_a_value(env):
    cfg = schema.defaults(env)
    unset = [name for name, _ in leaf_fields(schema.Config) if OmegaConf.is_missing(cfg, name)]
    assert not unset, f"fields without a value in cfgs/config.yaml or cfgs/env/{env}.yaml: {unset}"


def test_evaluate_yaml_gives_every_field_but_the_run_a_value():
    cfg = schema.own_values("evaluate")
    assert [name for name, _ in leaf_fields(schema.EvaluateConfig) if OmegaConf.is_missing(cfg, name)] == ["run"]


@pytest.mark.parametrize("env", schema.ENVS)
def test_defaults_are_what_hydra_composes_from_cfgs(env):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(schema.CFGS), version_base="1.3"):
        assert compose("config", overrides=[f"env={env}"]) == schema.defaults(env)
        assert compose("evaluate") == schema.own_values("evaluate")


def test_an_older_run_config_that_lacks_newer_keys_takes_the_yaml_values_of_its_env():
    full = schema.defaults("walker2d")
    OmegaConf.resolve(full)
    older = OmegaConf.to_container(full)
    for section, key in (("train", "threads"), ("buffer", "sha256"), ("env", "assignment_bar")):
        del older[section][key]
    del older["wandb"]
    assert schema.typed(older) == full
    assert schema.typed(older).env.assignment_bar == {"medium": 70}  # walker2d's, not the default env's


def test_the_config_of_a_run_on_minari_data_is_refused_naming_its_key():
    saved = OmegaConf.to_container(schema.defaults("hopper"))
    saved["buffer"]["source"] = "minari"
    with pytest.raises(schema.ConfigError, match="^buffer.source: Key 'source' not in 'BufferConfig'"):
        schema.typed(saved)


def test_a_saved_config_file_that_lacks_newer_keys_still_composes(tmp_path):
    GlobalHydra.instance().clear()
    saved = OmegaConf.to_container(schema.defaults("hopper"))
    del saved["train"]["threads"], saved["logger"]
    (tmp_path / "config.yaml").write_text(schema.to_yaml(OmegaConf.create(saved)))
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        cfg = compose("config")
    assert cfg.train.threads is None and cfg.logger == ["csv"]
    assert cfg.env.target_return == 3600
