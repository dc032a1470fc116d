"""create_model: heads, pooling, preprocessing, features, channels, save/load and bad input."""
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import shapes_only

import zoo
from applications.layers import Preprocessing
from zoo.errors import InvalidArgumentError, UnknownModelError, WeightsError, ZooError
from zoo.factory import adapt_conv_kernel
from zoo.registry import measured, specs

SMALL = (32, 32)


@pytest.mark.parametrize("name, params", [("resnet50", 25_636_712), ("mobilenetv2", 3_538_984),
                                          ("efficientnet_b0", 5_330_571), ("vgg16", 138_357_544)])
def test_parameter_counts_with_the_imagenet_top_equal_keras_applications(name, params):
    with shapes_only():
        assert zoo.create_model(name, num_classes=1000, pretrained=False).count_params() == params


def test_head_is_one_named_layer_and_no_head_gives_the_pooled_embedding():
    model = zoo.create_model("mobilenetv3_small", num_classes=7, pretrained=False, input_shape=SMALL)
    assert model.output.shape == (None, 7)
    assert model.layers[-1].name == "head" and model.get_layer("head").units == 7
    embed = zoo.create_model("mobilenetv3_small", pretrained=False, input_shape=SMALL)
    assert embed.output.shape == (None, 576)
    assert "head" not in [layer.name for layer in embed.layers]
    fmap = zoo.create_model("mobilenetv3_small", pretrained=False, input_shape=SMALL, pooling="none")
    assert fmap.output.shape == (None, 1, 1, 576)


def test_head_hidden_layers_sit_between_pooling_and_head():
    model = zoo.create_model("mobilenetv3_small", num_classes=3, head_hidden=(32, 16), pretrained=False,
                             input_shape=SMALL)
    assert [layer.name for layer in model.layers[-3:]] == ["pre_logits_1", "pre_logits_2", "head"]
    assert model.get_layer("pre_logits_2").units == 16
    with pytest.raises(InvalidArgumentError, match="positive widths"):
        zoo.create_model("mobilenetv3_small", num_classes=3, head_hidden=(0,), pretrained=False, input_shape=SMALL)


def test_dropout_sits_before_the_head():
    model = zoo.create_model("mobilenetv3_small", num_classes=3, dropout=0.3, pretrained=False, input_shape=SMALL)
    assert model.layers[-2].name == "head_dropout" and model.layers[-2].rate == 0.3


PREPROCESS_MODULES = {
    "resnet": "resnet", "resnet_v2": "resnet_v2", "vgg": "vgg16", "densenet": "densenet",
    "inception": "inception_v3", "xception": "xception", "mobilenet": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3", "nasnet": "nasnet", "efficientnet": "efficientnet",
    "efficientnet_v2": "efficientnet_v2", "convnext": "convnext",
}


@pytest.mark.parametrize("family, module", sorted(PREPROCESS_MODULES.items()))
def test_preprocessing_in_the_model_equals_keras_preprocess_input(family, module):
    spec = next(s for s in specs() if s.family == family and s.source == "keras.applications")  # whatever loaded first
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    if spec.preprocessing == "builtin":  # the backbone normalises inside; keras's function is the identity
        np.testing.assert_array_equal(expected, x)
        return
    np.testing.assert_allclose(keras.ops.convert_to_numpy(Preprocessing(spec.preprocessing)(x)), expected,
                               rtol=1e-5, atol=1e-4)


def test_create_model_inserts_the_family_preprocessing_layer():
    model = zoo.create_model("densenet121", pretrained=False, input_shape=SMALL)
    assert model.get_layer("preprocessing").mode == "torch"
    raw = zoo.create_model("densenet121", pretrained=False, input_shape=SMALL, include_preprocessing=False)
    assert "preprocessing" not in [layer.name for layer in raw.layers]


def test_features_only_returns_stage_maps_by_stride_or_by_index():
    model = zoo.create_model("resnet50", pretrained=False, input_shape=(64, 64), features_only=True)
    assert {k: v.shape[1] for k, v in model.output.items()} == {"4": 16, "8": 8, "16": 4, "32": 2}
    picked = zoo.create_model("resnet50", pretrained=False, input_shape=(64, 64), features_only=True,
                              out_indices=(1, -1))
    assert [t.shape for t in picked.output] == [(None, 8, 8, 512), (None, 2, 2, 2048)]


def test_adapt_conv_kernel_follows_timm():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype("float32")
    np.testing.assert_allclose(adapt_conv_kernel(kernel, 1)[:, :, 0], kernel.sum(axis=2), rtol=1e-6)
    five = adapt_conv_kernel(kernel, 5)
    np.testing.assert_allclose(five, np.concatenate([kernel, kernel[:, :, :2]], axis=2) * 3 / 5, rtol=1e-6)


@pytest.mark.slow
def test_saved_model_loads_in_a_fresh_process_with_safe_mode(tmp_path):
    model = zoo.create_model("mobilenetv3_small", num_classes=3, pretrained=False, input_shape=SMALL)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    code = (f"import numpy as np, zoo; m = zoo.load_model(r'{tmp_path}/m.keras'); "
            f"np.testing.assert_allclose(m.predict(np.load(r'{tmp_path}/x.npy'), verbose=0), "
            f"np.load(r'{tmp_path}/y.npy'), rtol=1e-5, atol=1e-6); print('same')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "same", out.stderr[-2000:]


def test_pretrained_path_loads_weights_files_and_keras_files(tmp_path):
    source = zoo.create_model("mobilenetv3_small", num_classes=3, pretrained=False, input_shape=SMALL)
    source.get_layer("backbone").save_weights(tmp_path / "b.weights.h5")
    source.save(tmp_path / "m.keras")
    expected = source.get_layer("backbone").get_weights()
    for path in [tmp_path / "b.weights.h5", tmp_path / "m.keras"]:
        model = zoo.create_model("mobilenetv3_small", num_classes=3, pretrained=str(path), input_shape=SMALL)
        for got, want in zip(model.get_layer("backbone").get_weights(), expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(name="resnt50"), UnknownModelError, "did you mean resnet50"),
    (dict(name="resnet50.laion"), UnknownModelError, "its tags: imagenet"),
    (dict(name="inception_v3", input_shape=SMALL), InvalidArgumentError, "at least 75x75"),
    (dict(name="resnet50", num_classes=-1), InvalidArgumentError, "positive integer"),
    (dict(name="resnet50", num_classes=3, features_only=True), InvalidArgumentError, "drop num_classes"),
    (dict(name="resnet50", out_indices=(0,)), InvalidArgumentError, "features_only"),
    (dict(name="resnet50", features_only=True, out_indices=(4,)), InvalidArgumentError, "has 4 stages"),
    (dict(name="resnet50", in_channels=0), InvalidArgumentError, "at least one channel"),
    (dict(name="resnet50", pooling="median"), InvalidArgumentError, "unknown pooling"),
    (dict(name="resnet50", pretrained="/no/such/file.weights.h5"), ZooError, "no weights file"),
    (dict(name="resnet50", pretrained="weights.npz"), InvalidArgumentError, "must end in"),
    (dict(name="efficientnet_b0", include_preprocessing=False), InvalidArgumentError, "cannot build"),
])
def test_bad_input_raises_a_zoo_error_that_says_what_to_do(kwargs, error, text):
    kwargs.setdefault("pretrained", False)
    with pytest.raises(error, match=text):
        zoo.create_model(kwargs.pop("name"), **kwargs)


def _min_shape(spec):
    return (max(spec.min_input_size, 32),) * 2


@pytest.mark.slow
# keras-hub's entries are checked against its published parameter counts in test_hub.py (the ViT-L and
# DINOv2-L configurations alone would add a minute here)
@pytest.mark.parametrize("spec", [s for s in specs() if s.source != "keras-hub"], ids=lambda s: s.arch)
def test_every_catalog_entry_builds_with_the_right_output_shape(spec):
    with shapes_only():  # built layer by layer at the smallest input the entry takes
        model = zoo.create_model(spec.arch, num_classes=3, pretrained=False, input_shape=_min_shape(spec))
        assert tuple(model.output.shape) == (None, 3)
        assert model.get_layer("backbone").count_params() == measured(spec)["params"]  # what `keras-zoo list` shows


def test_a_local_weights_file_serves_another_channel_count(tmp_path):
    model = zoo.create_model("resnet_tiny.digits", num_classes=3)
    zoo.save_backbone_weights(model, tmp_path / "rgb.weights.h5")
    gray = zoo.create_model("resnet_tiny", num_classes=3, pretrained=tmp_path / "rgb.weights.h5", in_channels=1,
                            input_shape=(16, 16))
    rgb_kernel = model.get_layer("backbone").get_layer("stem_conv").kernel.numpy()
    gray_kernel = gray.get_layer("backbone").get_layer("stem_conv").kernel.numpy()
    np.testing.assert_allclose(gray_kernel[:, :, 0], rgb_kernel.sum(axis=2), rtol=1e-6)  # timm's rule
    zoo.save_backbone_weights(gray, tmp_path / "gray.weights.h5")  # a file made at one channel loads as it is
    again = zoo.create_model("resnet_tiny", num_classes=3, pretrained=tmp_path / "gray.weights.h5", in_channels=1,
                             input_shape=(16, 16))
    np.testing.assert_array_equal(again.get_layer("backbone").get_layer("stem_conv").kernel.numpy(), gray_kernel)


def test_a_weights_file_of_another_architecture_is_one_short_line(tmp_path):
    zoo.save_backbone_weights(zoo.create_model("resnet_tiny.digits"), tmp_path / "rt.weights.h5")
    with pytest.raises(WeightsError) as error:
        zoo.create_model("mlp_small", pretrained=tmp_path / "rt.weights.h5")
    message = str(error.value)
    assert "does not fit the backbone of mlp_small" in message and "\n" not in message and len(message) < 500
