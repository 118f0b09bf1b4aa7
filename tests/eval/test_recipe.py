"""The report's recipe table says which optimizer, schedule, loss and weights a run used."""

from __future__ import annotations

import yaml

from ich.config import config_to_dict, load_config
from ich.eval.recipe import recipe_rows_from_text


def test_recipe_rows_from_config_text() -> None:
    cfg = load_config(
        None,
        [
            "optim.name=sgd", "optim.nesterov=true", "optim.schedule=exponential",
            "optim.gamma=0.8", "loss.name=focal", "loss.smoothing=0.1",
            "train.freeze_epochs=2", "optim.backbone_lr_mult=0.1", "train.ema_decay=0.999",
            "train.accumulate=4", "train.batch_size=8", "sequence.temperature_scaling=false",
            "sequence.features=logits",
        ],
    )
    rows = dict(recipe_rows_from_text(yaml.safe_dump(config_to_dict(cfg))))
    assert "sgd" in rows["Optimizer"] and "nesterov" in rows["Optimizer"]
    assert "exponential x0.8 per epoch" in rows["Optimizer"]
    assert rows["Loss"].startswith("focal (gamma 2), label smoothing 0.1")
    assert "frozen backbone for 2 epochs" in rows["Transfer learning"]
    assert rows["Batch per step"] == "32 (4 accumulated batches of 8)"
    assert rows["Weights"] == "EMA, decay 0.999"
    assert "Sequence model calibration" not in rows
    assert rows["Sequence model input"] == "the slice CNN's logits alone"
    default = dict(recipe_rows_from_text(yaml.safe_dump(config_to_dict(load_config(None)))))
    assert default["Loss"] == "weighted BCE, label weights of the metric"
    assert "Transfer learning" not in default and default["Weights"] == "last optimizer step"
    assert "temperature fitted on the validation fold" in default["Sequence model calibration"]
    assert default["Sequence model input"] == "the slice CNN's embeddings and logits"


def test_recipe_rows_tolerate_bad_text() -> None:
    assert recipe_rows_from_text(None) == []
    assert recipe_rows_from_text("optim: [unclosed") == []
    assert recipe_rows_from_text("optim: {name: rmsprop}") == []
