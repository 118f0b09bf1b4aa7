"""Configuration: YAML + overrides, unknown keys and wrong types are named errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ich.config import RunConfig, config_from_dict, config_to_dict, load_config, save_config
from ich.errors import ConfigError


def test_defaults_and_overrides() -> None:
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "optim.lr=3e-4",
            "data.windows=[brain,bone]",
            "model.weights=null",
            "train.max_steps_per_epoch=5",
        ],
    )
    assert isinstance(cfg, RunConfig)
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.windows == ("brain", "bone")
    assert cfg.model.weights is None
    assert cfg.train.max_steps_per_epoch == 5


def test_yaml_then_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: resnet18\ntrain:\n  epochs: 7\n  batch_size: 4\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg.model.backbone == "resnet18"
    assert cfg.train.epochs == 2
    assert cfg.train.batch_size == 4


def test_int_accepted_for_float_but_not_str_for_int(tmp_path: Path) -> None:
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"train\.amp"):
        load_config(None, ["train.amp=1"])


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr_max: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.lr_max"):
        load_config(path)
    with pytest.raises(ConfigError, match="nosection"):
        load_config(None, ["nosection.x=1"])


def test_wrong_type_in_file_and_literal(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("train:\n  batch_size: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*train\.batch_size"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"sequence\.kind"):
        load_config(None, ["sequence.kind=rnn"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.backbone=resnet10t", "data.offsets=[-1,0,1]"])
    path = save_config(cfg, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    assert yaml.safe_load(path.read_text())["data"]["offsets"] == [-1, 0, 1]
    again = load_config(path)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert not list((tmp_path / "run").glob(".*tmp"))


@pytest.mark.parametrize("name", ["default", "demo"])
def test_packaged_configs_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.train.epochs >= 1
    assert cfg.model.backbone


def test_override_text_with_a_colon_stays_text() -> None:
    cfg = load_config(None, ["provenance=phantom cohort (ich synth: 60 studies)"])
    assert cfg.provenance == "phantom cohort (ich synth: 60 studies)"
    with pytest.raises(ConfigError, match="provenance"):
        load_config(None, ["provenance={a: 1}"])


def test_dataclass_defaults_are_the_packaged_recipe() -> None:
    # One source of defaults: `ich train` without --config (default.yaml) and library code
    # (the dataclasses) must train the same recipe.
    assert config_to_dict(load_config(None)) == config_to_dict(load_config("default"))


def test_config_reference_page_is_up_to_date() -> None:
    from ich.config_reference import render_reference

    page = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert page.read_text() == render_reference(), (
        "docs/config.md is stale: python -m ich.config_reference > docs/config.md")
    for key in ("data.subsample", "decision.method", "train.epochs", "augment.enabled"):
        assert f"`{key}`" in page.read_text()


def test_print_config_prints_the_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    from ich.cli import main

    assert main(["train", "--print-config", "train.epochs=3", "model.backbone=resnet10t"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = config_to_dict(load_config("default", ["train.epochs=3",
                                                      "model.backbone=resnet10t"]))
    assert printed == expected
