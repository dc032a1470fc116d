"""The model knows what it is: its Backbone carries the catalog entry through save/load, renaming and nesting."""
import subprocess
import sys

import keras
import numpy as np
import pytest

import zoo
from zoo.training import groups

# unfreeze(blocks=1) on resnet_tiny.digits with a 3-class head: the last stage (stage3, 524,416 parameters
# in its convolutions and BatchNorm scales and offsets) plus the head (128 * 3 + 3).
HEAD_AND_LAST_STAGE = 525_955


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def unfrozen(model) -> int:
    zoo.freeze(model)
    zoo.unfreeze(model, blocks=1)
    return trainable(model)


@pytest.fixture(scope="module")
def model():
    return zoo.create_model("resnet_tiny.digits", num_classes=3)


def test_the_model_carries_its_entry(model):
    entry = zoo.entry_of(model)
    assert (entry.name, entry.arch, entry.weights, entry.preprocessing) == ("resnet_tiny.digits", "resnet_tiny",
                                                                           "digits", "rescale")
    assert entry.input_size == (16, 16, 3)  # the size the digits weights were made at
    assert entry.stages == tuple(zoo.model_info("resnet_tiny")["stages"][k] for k in (1, 2, 4))
    assert zoo.entry_of(zoo.create_model("resnet_tiny", pretrained=False)).name == "resnet_tiny"
    assert zoo.entry_of(keras.Sequential([keras.layers.Dense(2)])) is None


def test_unfreeze_means_the_same_on_the_model_a_reloaded_renamed_and_a_nested_copy(model, tmp_path):
    last_stage = [g for g in groups(model) if g.name == "stage3"][0]
    stage_params = sum(int(np.prod(w.shape)) for layer in last_stage.layers for w in layer.trainable_weights)
    assert unfrozen(model) == HEAD_AND_LAST_STAGE == stage_params + 128 * 3 + 3

    model.save(tmp_path / "m.keras")
    reloaded = zoo.load_model(tmp_path / "m.keras")
    reloaded.name = "renamed"  # nothing is looked up by name
    assert zoo.entry_of(reloaded) == zoo.entry_of(model)
    assert unfrozen(reloaded) == HEAD_AND_LAST_STAGE

    inputs = keras.Input((16, 16, 3))
    nested = keras.Model(inputs, zoo.create_model("resnet_tiny.digits", num_classes=3)(inputs), name="mine")
    assert [g.name for g in groups(nested)] == [g.name for g in groups(model)]
    assert unfrozen(nested) == HEAD_AND_LAST_STAGE
    nested.save(tmp_path / "nested.keras")
    assert unfrozen(zoo.load_model(tmp_path / "nested.keras")) == HEAD_AND_LAST_STAGE


def test_the_entry_survives_a_fresh_process(model, tmp_path):
    model.save(tmp_path / "m.keras")
    code = (f"import zoo; m = zoo.load_model({str(tmp_path / 'm.keras')!r}); "
            "print(zoo.entry_of(m).name, [g.name for g in zoo.training.groups(m)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "resnet_tiny.digits ['stage1', 'stage2', 'stage3', 'head']", out.stderr[-2000:]


def test_mixed_precision_and_strategy_copies_keep_the_entry():
    from zoo.backbone import clone

    copy = clone(zoo.create_model("resnet_tiny.digits", num_classes=3))
    assert zoo.entry_of(copy).name == "resnet_tiny.digits"
    assert unfrozen(copy) == HEAD_AND_LAST_STAGE


def test_backbone_weights_round_trip_through_create_model(model, tmp_path):
    zoo.save_backbone_weights(model, tmp_path / "b.weights.h5")
    again = zoo.create_model("resnet_tiny", num_classes=3, pretrained=tmp_path / "b.weights.h5",
                             input_shape=(16, 16))
    probe = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    features = [keras.Model(m.input, m.get_layer("pool").output)(probe) for m in (model, again)]
    np.testing.assert_allclose(*features, rtol=1e-6)
