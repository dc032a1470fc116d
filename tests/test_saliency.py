"""Saliency: Grad-CAM, attention rollout and integrated gradients, each against its paper's formula written out here."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
from zoo.backbone import find_backbone
from zoo.errors import InvalidArgumentError
from zoo.represent.features import layer_names, tap
from zoo.represent.saliency import attention_rollout, explain_files, gradcam, integrated_gradients, overlay


def _random_head(model, seed=0):
    """create_model's head starts at zero (all scores equal, all gradients zero): give it random weights."""
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(seed).normal(size=kernel.shape).astype("float32"), bias])
    return model


@pytest.fixture(scope="module")
def resnet():
    return _random_head(zoo.create_model("resnet_tiny", num_classes=3, pretrained=False, input_shape=(16, 16)))


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(0)
    return _random_head(zoo.create_model("vit_pico_p4", num_classes=3, pretrained=False))


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _cam_network(softmax):
    """Two same-padded convolutions (maps as large as the input, so no interpolation), GAP, Dense."""
    keras.utils.set_random_seed(1)
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax" if softmax else None, name="fc",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(x)
    return keras.Model(inputs, out)


def _normalised(m):
    return m / m.max() if m.max() > 0 else m


@pytest.mark.parametrize("softmax", [False, True])
def test_gradcam_on_gap_dense_equals_cam(softmax):
    model = _cam_network(softmax)
    images = _images(3, 16)
    maps = keras.Model(model.inputs, model.get_layer("last_conv").output).predict(images, verbose=0)
    weights = model.get_layer("fc").get_weights()[0]  # (K, classes)
    predicted = np.argmax(model.predict(images, verbose=0), axis=-1)
    for classes in (None, [2, 0, 3]):
        heat = gradcam(model, images, class_index=classes, layer="last_conv")
        assert heat.shape == (3, 16, 16)
        for n in range(3):
            c = predicted[n] if classes is None else classes[n]
            cam = np.zeros((16, 16))  # Zhou et al. 2016: ReLU(sum_k W[k, c] A_k)
            for k in range(maps.shape[-1]):
                cam += weights[k, c] * maps[n, :, :, k]
            np.testing.assert_allclose(heat[n], _normalised(np.maximum(cam, 0)), atol=1e-5)


def test_gradcam_downsampled_maps_come_back_at_input_size(resnet):
    heat = gradcam(resnet, _images(3, 16), class_index=1)
    assert heat.shape == (3, 16, 16) and heat.dtype == np.float32
    assert heat.min() >= 0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    assert len(np.unique(heat[0])) > 16  # upsampled bilinearly from 4x4: not 16 flat blocks


def test_gradcam_default_layer_is_the_last_catalog_stage(resnet):
    images = _images(2, 16)
    stages = zoo.entry_of(resnet).stages
    default = gradcam(resnet, images)
    np.testing.assert_allclose(default, gradcam(resnet, images, layer=stages[-1]), atol=1e-6)
    assert np.abs(default - gradcam(resnet, images, layer=stages[0])).max() > 0.05


def _smooth_network():
    keras.utils.set_random_seed(2)
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="random_normal")(x))


def test_integrated_gradients_completeness():
    model = _smooth_network()
    images = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    baseline = np.full((8, 8, 3), 0.5, "float32")
    gap = model.predict(images, verbose=0)[:, 1] - model.predict(baseline[None], verbose=0)[0, 1]
    errors = []
    for steps in (2, 8, 64):
        attributions = integrated_gradients(model, images, class_index=1, baseline=baseline, steps=steps,
                                            heatmap=False, batch_size=7)
        assert attributions.shape == images.shape
        errors.append(np.abs(attributions.sum(axis=(1, 2, 3)) - gap).max())
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-3 * np.abs(gap).max()


@pytest.mark.parametrize("softmax", [False, True])
def test_integrated_gradients_of_a_linear_model(softmax):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4, 4, 2))
    dense = keras.layers.Dense(3, activation="softmax" if softmax else None, kernel_initializer="random_normal")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    images = np.random.default_rng(5).normal(size=(2, 4, 4, 2)).astype("float32")
    baseline = np.random.default_rng(6).normal(size=(2, 4, 4, 2)).astype("float32")
    w = dense.get_weights()[0]
    attributions = integrated_gradients(model, images, class_index=[0, 2], baseline=baseline, steps=3,
                                        heatmap=False)
    heat = integrated_gradients(model, images, class_index=[0, 2], baseline=baseline, steps=3)
    for n, c in enumerate([0, 2]):
        expected = (images[n] - baseline[n]) * w[:, c].reshape(4, 4, 2)
        np.testing.assert_allclose(attributions[n], expected, atol=1e-5)
        summed = np.zeros((4, 4))
        for ch in range(2):
            summed += expected[:, :, ch]
        np.testing.assert_allclose(heat[n], _normalised(np.maximum(summed, 0)), atol=1e-5)


def _reference_rollout(model, images, fusion="mean", discard=0.0):
    """Abnar & Zuidema 2020 in plain loops, from each block's attention probabilities."""
    depth = sum(1 for n in layer_names(model) if n.endswith("_attn"))
    normed = tap(model, [f"block{i}_norm1" for i in range(1, depth + 1)])(tf.constant(images))[:-1]
    body = find_backbone(model)
    probs = [np.asarray(body.get_layer(f"block{i + 1}_attn")(y, y, return_attention_scores=True)[1])
             for i, y in enumerate(normed)]
    heat = []
    for n in range(len(images)):
        tokens = probs[0].shape[-1]
        rollout = np.eye(tokens)
        for p in probs:
            a = getattr(p[n], fusion)(axis=0).astype("float64")
            if discard:
                flat = a.reshape(-1)
                flat[flat < np.sort(flat)[int(flat.size * discard)]] = 0.0
            a = a + np.eye(tokens)
            for row in range(tokens):
                a[row] /= a[row].sum()
            rollout = a @ rollout
        heat.append(rollout[0, 1:].reshape(8, 8))
    up = tf.image.resize(np.stack(heat)[..., None], (32, 32), method="bilinear").numpy()[..., 0]
    return np.stack([_normalised(m) for m in up])


@pytest.mark.parametrize("fusion, discard", [("mean", 0.0), ("max", 0.5)])
def test_attention_rollout_matches_the_paper(vit, fusion, discard):
    images = _images(2, 32)
    heat = attention_rollout(vit, images, head_fusion=fusion, discard_ratio=discard, batch_size=1)
    assert heat.shape == (2, 32, 32) and heat.min() >= 0 and np.allclose(heat.max(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(heat, _reference_rollout(vit, images, fusion, discard), atol=1e-5)


def test_overlay_and_explain_files_write_pngs(resnet, vit, tmp_path):
    rng = np.random.default_rng(7)
    paths = []
    for name in ("one", "two"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(paths[-1])
    written = explain_files(resnet, paths, class_names=["cat", "dog", "bird"])
    assert written == [tmp_path / "one.gradcam.png", tmp_path / "two.gradcam.png"]
    (vit_png,) = explain_files(vit, paths[:1], out_dir=tmp_path / "out")
    assert vit_png == tmp_path / "out" / "one.attention_rollout.png"
    inputs = keras.Input((16, 16, 3))
    linear = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    (ig_png,) = explain_files(linear, paths[1:])
    assert ig_png == tmp_path / "two.integrated_gradients.png"
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    drawn = overlay(np.zeros((16, 32, 1)), heat, tmp_path / "wide.png", title="wide")
    for path in [*written, vit_png, ig_png, drawn]:
        with Image.open(path) as png:
            assert png.format == "PNG" and png.width == 460
            assert np.asarray(png.convert("RGB")).std() > 10  # not a blank picture
    with Image.open(written[0]) as png:
        assert png.height == 440  # square input: 4 inches of image under the title
    with Image.open(drawn) as png:
        assert png.height == 240  # twice as wide as tall


def _no_stages():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("call, words", [
    (lambda r, v: gradcam(r, _images(2, 32)), "takes images of shape (16, 16, 3)"),
    (lambda r, v: gradcam(r, _images(2, 16)[0]), "takes images of shape"),
    (lambda r, v: gradcam(r, _images(2, 16), layer="stage3_blok2_out"), "did you mean stage3_block2_out"),
    (lambda r, v: gradcam(v, _images(1, 32)), "attention_rollout or integrated_gradients"),
    (lambda r, v: gradcam(_no_stages(), _images(1, 16)), "layer='conv'"),
    (lambda r, v: gradcam(r, _images(2, 16), class_index=3), "class_index must be in [0, 3)"),
    (lambda r, v: gradcam(r, _images(2, 16), class_index=[0]), "one per image"),
    (lambda r, v: integrated_gradients(r, _images(1, 16), steps=0), "steps must be a positive integer"),
    (lambda r, v: integrated_gradients(r, _images(1, 16), baseline=np.zeros((8, 8, 3))), "baseline must have"),
    (lambda r, v: integrated_gradients(r, _images(1, 16), class_index=-1), "class_index must be in"),
    (lambda r, v: attention_rollout(r, _images(1, 16)), "no zoo transformer blocks"),
    (lambda r, v: attention_rollout(v, _images(1, 32), discard_ratio=1.0), "discard_ratio"),
    (lambda r, v: attention_rollout(v, _images(1, 32), head_fusion="sum"), "mean, max, min"),
    (lambda r, v: explain_files(r, ["x.png"], method="lime"), "gradcam, attention_rollout, integrated_gradients"),
    (lambda r, v: overlay(np.zeros((4, 4, 3)), np.zeros((2, 2, 2)), "x.png"), "heat map (h, w)"),
])
def test_bad_inputs_are_one_line_errors(resnet, vit, call, words):
    with pytest.raises(InvalidArgumentError) as raised:
        call(resnet, vit)
    assert words in str(raised.value) and "\n" not in str(raised.value)
