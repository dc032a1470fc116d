"""The weights store, tested offline on weight files the tests make under Keras's file names."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import zoo
from zoo import registry, weights
from zoo.errors import WeightsHashError, WeightsNotFoundError

SMALL = (32, 32, 3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Keras cache folder for this test."""
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path)
    return tmp_path


def seed(cache, monkeypatch, arch, constructor):
    """Write a keras.applications backbone with random weights under Keras's file name for ``arch``.

    The catalog's entry is given that file's hash (the real hash belongs to the real ImageNet file).
    Returns the keras model whose weights the file holds.
    """
    spec = registry.resolve(arch)[0]
    made = getattr(keras.applications, constructor)(include_top=False, weights=None, input_shape=SMALL)
    rng = np.random.default_rng(0)
    made.set_weights([w + rng.uniform(0.0, 0.1, w.shape).astype(w.dtype) for w in made.get_weights()])
    path = cache / "models" / spec.weights[0].file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    made.save(path)  # a legacy .h5 file, the format of keras.applications' weight files
    weight = dataclasses.replace(spec.weights[0], file_hash=weights.file_hash(path))
    monkeypatch.setitem(registry._REGISTRY, arch, dataclasses.replace(spec, weights=(weight,)))
    return made


def backbone_weights(model):
    return model.get_layer("backbone").get_weights()


def test_pretrained_weights_come_from_keras_cache_value_for_value(cache, monkeypatch):
    made = seed(cache, monkeypatch, "mobilenetv3_small", "MobileNetV3Small")
    model = zoo.create_model("mobilenetv3_small.imagenet", num_classes=4, input_shape=SMALL)
    for got, want in zip(backbone_weights(model), made.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_corrupted_file_is_refused_and_never_loaded(cache, monkeypatch):
    seed(cache, monkeypatch, "mobilenetv3_small", "MobileNetV3Small")
    path = weights.local_path(registry.resolve("mobilenetv3_small")[1])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsHashError, match="does not match the hash"):
        zoo.create_model("mobilenetv3_small", input_shape=SMALL)


def test_offline_without_the_file_names_the_file_its_url_and_the_import_command(cache, monkeypatch):
    monkeypatch.setenv("KERAS_ZOO_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as info:
        zoo.create_model("resnet50.imagenet")
    text = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in text
    assert "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" in text
    assert "keras-zoo weights import resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 --model " \
           "resnet50.imagenet" in text


def test_download_goes_through_keras_get_file_and_checks_the_hash(cache, monkeypatch, tmp_path_factory):
    """A file:// URL stands in for the network: the real download code runs."""
    source_dir = tmp_path_factory.mktemp("server")
    made = seed(source_dir, monkeypatch, "mobilenetv3_small", "MobileNetV3Small")
    spec, weight = registry.resolve("mobilenetv3_small")
    served = source_dir / "models" / weight.file_name
    monkeypatch.setitem(registry._REGISTRY, spec.arch, dataclasses.replace(
        spec, weights=(dataclasses.replace(weight, url=served.as_uri()),)))
    monkeypatch.setenv("KERAS_ZOO_OFFLINE", "0")
    path = weights.resolve("mobilenetv3_small")
    assert path == cache / "models" / weight.file_name and path.read_bytes() == served.read_bytes()
    model = zoo.create_model("mobilenetv3_small", input_shape=SMALL)
    np.testing.assert_array_equal(backbone_weights(model)[0], made.get_weights()[0])


def test_import_copies_a_verified_file_into_the_cache(cache, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("downloads")
    seed(elsewhere, monkeypatch, "mobilenetv3_small", "MobileNetV3Small")
    weight = registry.resolve("mobilenetv3_small")[1]
    target = weights.import_file(elsewhere / "models" / weight.file_name, "mobilenetv3_small.imagenet")
    assert target == cache / "models" / weight.file_name and weights.status("mobilenetv3_small")["verified"]


def test_in_channels_adapts_the_first_conv_and_keeps_every_other_layer(cache, monkeypatch):
    made = seed(cache, monkeypatch, "mobilenetv3_small", "MobileNetV3Small")
    rgb = made.get_layer("conv").get_weights()[0]
    for channels in (1, 5):
        model = zoo.create_model("mobilenetv3_small", input_shape=SMALL[:2], in_channels=channels)
        backbone = model.get_layer("backbone")
        kernel = backbone.get_layer("conv").get_weights()[0]
        expected = rgb.sum(axis=2, keepdims=True) if channels == 1 else \
            np.concatenate([rgb, rgb[:, :, :2]], axis=2) * 3 / 5
        np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-6)
        for layer, source in zip(backbone.layers[3:], made.layers[3:]):  # after input, rescaling, conv
            for got, want in zip(layer.get_weights(), source.get_weights()):
                np.testing.assert_array_equal(got, want)
        assert model.output.shape == (None, 576)


SEEDED_KERAS_HOME = textwrap.dedent("""
    import dataclasses, numpy as np, keras
    from keras.src.applications import efficientnet
    import zoo
    from zoo import registry, weights
    path = weights.cache_dir() / "models" / "efficientnetb0_notop.h5"
    assert str(path).startswith({home!r}), path
    path.parent.mkdir(parents=True, exist_ok=True)
    made = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    made.set_weights([w + rng.uniform(0.0, 0.1, w.shape).astype(w.dtype) for w in made.get_weights()])
    made.save(path)
    spec = registry.resolve("efficientnet_b0")[0]
    weight = dataclasses.replace(spec.weights[0], file_hash=weights.file_hash(path))
    registry.register(dataclasses.replace(spec, weights=(weight,)))
    ours = zoo.create_model("efficientnet_b0.imagenet", input_shape=(32, 32))
    # keras's own ImageNet model, built from the same file (its download call answered with it)
    efficientnet.file_utils.get_file = lambda *args, **kwargs: str(path)
    theirs = keras.applications.EfficientNetB0(include_top=False, weights="imagenet",
                                               input_shape=(32, 32, 3), pooling="avg")
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = theirs.predict(x, verbose=0)
    diff = np.abs(ours.predict(x, verbose=0) - want).max() / np.abs(want).max()  # random weights: huge values
    print("max relative difference", diff)
    assert diff < 1e-5, diff
""")


def test_keras_home_cache_serves_efficientnet_as_keras_applications_computes_it(tmp_path):
    """In a fresh process whose KERAS_HOME is set before keras is imported, as a user would."""
    env = {**os.environ, "KERAS_HOME": str(tmp_path), "KERAS_ZOO_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", SEEDED_KERAS_HOME.format(home=str(tmp_path))],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "max relative difference" in out.stdout, out.stderr[-3000:]
