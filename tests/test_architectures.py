"""keras-zoo's own architectures (applications/): sizes, stages, training, saving, bad configurations."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import shapes_only

import zoo
from applications.blocks import DropPath, PositionEmbedding
from applications.mlp import build_mlp
from applications.moe import build_vit_moe
from applications.resnet import build_resnet
from applications.vit import build_vit
from zoo.errors import InvalidArgumentError
from zoo.registry import resolve, specs

ROOT = Path(__file__).resolve().parents[1]
NATIVE = [s.arch for s in specs() if s.builder.startswith(("applications.mlp", "applications.resnet",
                                                          "applications.vit", "applications.moe"))]

# Trainable parameters with a 1000-class Dense head: torchvision (ResNet-18/34), timm (ResNet-26, ViT).
PARAMS_1000 = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet26": 15_995_176,
               "vit_tiny": 5_717_416, "vit_small": 22_050_664, "vit_base": 86_567_656}

# Tiny configurations of every family and option, for the fast tests: builder, kwargs.
TINY = {
    "mlp_batchnorm": (build_mlp, {"widths": (32, 16), "norm": "batch", "dropout": 0.1}),
    "mlp_layernorm": (build_mlp, {"widths": (32,), "norm": "layer", "activation": "gelu"}),
    "resnet_basic": (build_resnet, {"depths": (1, 1), "widths": (8, 16), "stem": "small", "stem_width": 8}),
    "resnet_preact_bottleneck": (build_resnet, {"depths": (1, 1), "widths": (8, 16), "block": "bottleneck",
                                                "preact": True, "stem": "small", "stem_width": 8,
                                                "drop_path_rate": 0.1}),
    "vit_token": (build_vit, {"patch_size": 8, "dim": 32, "depth": 2, "num_heads": 2, "drop_path_rate": 0.1}),
    "vit_avg": (build_vit, {"patch_size": 8, "dim": 32, "depth": 2, "num_heads": 2, "class_token": False}),
    "vit_moe": (build_vit_moe, {"patch_size": 8, "dim": 32, "depth": 2, "num_heads": 2, "num_experts": 4,
                                "top_k": 2}),
}


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def with_head(backbone: keras.Model, classes: int = 4) -> keras.Model:
    """Average pooling (over pixels or tokens) and a Dense head, as the factory would add."""
    x = backbone.output
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D()(x)
    elif len(x.shape) == 3:
        x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(backbone.input, keras.layers.Dense(classes)(x))


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # names and seeds; no gc.collect (0.3 s) per test


# --- catalog entries: sizes, stages, first convolution ----------------------------------------------------

def test_catalog_has_every_family():
    assert {resolve(a)[0].family for a in NATIVE} == {"mlp", "resnet", "vit", "vit_moe"}
    small = {"resnet_tiny", "mlp_small", "mlp_base", "vit_tiny_p4", "vit_pico_p4", "vit_moe_tiny_p4"}
    assert set(PARAMS_1000) | small <= set(NATIVE)
    for arch in NATIVE:
        spec = resolve(arch)[0]
        assert spec.preprocessing == "rescale" and spec.stages and spec.description, arch


@pytest.mark.parametrize("arch", NATIVE)
def test_entry_size_stages_and_first_conv(arch):
    spec = resolve(arch)[0]
    with shapes_only():
        model = zoo.create_model(arch, num_classes=1000, pretrained=False)
        if arch in PARAMS_1000:
            assert trainable_params(model) == PARAMS_1000[arch]
        backbone = model.get_layer("backbone")
        height = spec.input_size[0]
        for key, name in spec.stages.items():
            shape = backbone.get_layer(name).output.shape
            if spec.family == "resnet":  # key = output stride
                assert shape[1] == shape[2] == height // key, (name, shape)
            elif spec.family == "mlp":  # key = hidden layer
                assert shape == (None, spec.builder_kwargs["widths"][key - 1])
            else:  # key = block; a transformer keeps its tokens
                assert shape == backbone.output.shape and name == f"block{key}_out"
        assert list(spec.stages) == sorted(spec.stages)
        convs = [layer.name for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
        assert spec.first_conv == (convs[0] if convs else None)


def test_resnet_tiny_is_small_and_for_32x32():
    model = zoo.create_model("resnet_tiny", num_classes=10, pretrained=False)
    assert model.input.shape == (None, 32, 32, 3)
    assert 500_000 < trainable_params(model) < 1_000_000
    assert model.get_layer("backbone").output.shape == (None, 8, 8, 128)


def test_imagenet_stem_reaches_stride_32_and_small_stem_keeps_resolution():
    assert build_resnet((64, 64, 3)).output.shape == (None, 2, 2, 512)
    assert build_resnet((64, 64, 3), block="bottleneck").output.shape == (None, 2, 2, 2048)
    assert build_resnet((32, 32, 3), depths=(1,), widths=(8,), stem="small").output.shape == (None, 32, 32, 8)


def test_preact_resnet_ends_normalised_and_projects_the_preactivated_input():
    model = build_resnet((32, 32, 3), depths=(1, 1), widths=(8, 16), stem="small", preact=True)
    assert model.layers[-1].name == "final_relu"
    proj = model.get_layer("stage2_block1_0_conv")
    assert proj.input is model.get_layer("stage2_block1_1_relu").output
    assert "stage2_block1_0_bn" not in [layer.name for layer in model.layers]


def test_mlp_takes_vectors_and_names_its_hidden_layers():
    model = build_mlp((20,), widths=(8, 4), norm="batch")
    assert model.output.shape == (None, 4)
    assert [layer.name for layer in model.layers if layer.name.endswith("_out")] == ["hidden1_out", "hidden2_out"]
    assert not model.get_layer("hidden1_dense").use_bias  # the norm's offset replaces the bias


# --- training -----------------------------------------------------------------------------------------------

def colour_data(n: int = 64, seed: int = 0):
    """Noise images whose class (0, 1, 2) is the channel that is brighter: learnable by every family."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = 0.5 * rng.uniform(size=(n, 32, 32, 3)) + 0.5 * np.eye(3)[y][:, None, None, :]
    return x.astype("float32"), y


@pytest.mark.parametrize("config", TINY)
def test_each_family_trains(config):
    builder, kwargs = TINY[config]
    model = with_head(builder((32, 32, 3), **kwargs), classes=3)
    x, y = colour_data()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * np.log(3) and losses[-1] < losses[0], losses  # well below chance


def test_catalog_model_trains_through_create_model():
    model = zoo.create_model("resnet_tiny", num_classes=3, pretrained=False)
    x, y = colour_data(n=32, seed=1)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(255 * x, y, batch_size=16, epochs=4, verbose=0).history["loss"]
    assert model.output.shape == (None, 3) and losses[-1] < 0.5 * np.log(3) and losses[-1] < losses[0], losses


def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5, seed=1)
    x = np.ones((64, 3, 3, 2), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    out = np.asarray(layer(x, training=True)).reshape(64, -1)
    assert set(np.unique(out)) == {0.0, 2.0}
    assert (out.min(axis=1) == out.max(axis=1)).all()  # a sample is dropped entirely or kept entirely
    assert 10 < (out[:, 0] == 0).sum() < 54


# --- saving and loading -----------------------------------------------------------------------------------

LOAD_SCRIPT = """
import importlib, json, sys
import keras, numpy as np
for job in json.loads(sys.argv[1]):
    for module in job["modules"]:
        importlib.import_module(module)
    model = keras.saving.load_model(job["path"], safe_mode=True)
    np.save(job["out"], model.predict(np.load(job["x"]), verbose=0))
"""


@pytest.mark.slow
def test_save_and_load_in_a_fresh_process(tmp_path):
    models = {name: (with_head(builder((32, 32, 3), **kwargs)), [builder.__module__])
              for name, (builder, kwargs) in TINY.items()}
    models["vit_interpolated"] = (with_head(build_vit((48, 48, 3), patch_size=8, dim=16, depth=1, num_heads=2,
                                                      pos_embed_grid=4)), ["applications.vit"])
    for arch in ("resnet_tiny", "vit_pico_p4"):  # through the factory: applications.layers, and zoo's Backbone
        module = resolve(arch)[0].builder.partition(":")[0]
        model = zoo.create_model(arch, num_classes=10, pretrained=False)
        head = model.get_layer("head")  # zero-initialised: give it values, so predictions differ
        head.kernel.assign(np.random.default_rng(1).normal(size=head.kernel.shape).astype("float32"))
        models[arch] = (model, [module, "applications.layers", "zoo.backbone"])
    rng = np.random.default_rng(2)
    jobs, expected = [], {}
    for name, (model, modules) in models.items():
        x = rng.uniform(0, 255, size=(3, *model.input.shape[1:])).astype("float32")
        np.save(tmp_path / f"{name}_x.npy", x)
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.predict(x, verbose=0)
        jobs.append({"modules": modules, "path": str(tmp_path / f"{name}.keras"),
                     "x": str(tmp_path / f"{name}_x.npy"), "out": str(tmp_path / f"{name}.npy")})
    subprocess.run([sys.executable, "-c", LOAD_SCRIPT, json.dumps(jobs)], check=True, cwd=ROOT)
    for name, want in expected.items():
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == want.shape and np.std(want) > 0, name
        np.testing.assert_array_equal(got, want, err_msg=name)


# --- position embeddings at another input size --------------------------------------------------------------

def test_position_embedding_is_bilinear_on_the_grid_and_keeps_the_class_token():
    layer = PositionEmbedding(grid_size=(3, 3), input_grid=(6, 4), num_prefix_tokens=1)
    layer.build((None, 1 + 24, 5))
    table = np.random.default_rng(3).normal(size=(1, 10, 5)).astype("float32")
    layer.embedding.assign(table)
    resized = np.asarray(layer.resized())
    want = tf.image.resize(table[:, 1:].reshape(1, 3, 3, 5), (6, 4), method="bilinear").numpy().reshape(1, 24, 5)
    assert resized.shape == (1, 25, 5)
    np.testing.assert_array_equal(resized[:, :1], table[:, :1])
    np.testing.assert_allclose(resized[:, 1:], want, atol=1e-6)
    same = PositionEmbedding(grid_size=(3, 3), num_prefix_tokens=1)
    out = np.asarray(same(np.zeros((2, 10, 5), "float32")))
    np.testing.assert_array_equal(out, np.broadcast_to(same.embedding.numpy(), (2, 10, 5)))


def test_vit_weights_saved_at_32_load_into_a_vit_at_48(tmp_path):
    kwargs = {"patch_size": 4, "dim": 16, "depth": 1, "num_heads": 2, "pos_embed_grid": 8}
    small = build_vit((32, 32, 3), **kwargs)
    small.save_weights(tmp_path / "vit.weights.h5")
    large = build_vit((48, 48, 3), **kwargs)
    large.load_weights(tmp_path / "vit.weights.h5")
    x = np.random.default_rng(4).uniform(size=(2, 48, 48, 3)).astype("float32")
    assert large.predict(x, verbose=0).shape == (2, 1 + 12 * 12, 16)
    stored = small.get_layer("pos_embed").embedding.numpy()
    np.testing.assert_array_equal(large.get_layer("pos_embed").embedding.numpy(), stored)
    grid = tf.image.resize(stored[:, 1:].reshape(1, 8, 8, 16), (12, 12), method="bilinear").numpy()
    resized = np.asarray(large.get_layer("pos_embed").resized())
    np.testing.assert_allclose(resized[:, 1:], grid.reshape(1, 144, 16), atol=1e-6)
    again = build_vit((32, 32, 3), **kwargs)
    again.load_weights(tmp_path / "vit.weights.h5")
    crop = x[:, :32, :32]
    np.testing.assert_array_equal(again.predict(crop, verbose=0), small.predict(crop, verbose=0))


def test_create_model_loads_vit_weights_at_another_input_size(tmp_path):
    model = zoo.create_model("vit_pico_p4", pretrained=False)
    path = tmp_path / "pico.weights.h5"
    model.get_layer("backbone").save_weights(path)
    bigger = zoo.create_model("vit_pico_p4", pretrained=str(path), input_shape=(48, 48), num_classes=10)
    assert bigger.output.shape == (None, 10)
    np.testing.assert_array_equal(bigger.get_layer("backbone").get_layer("pos_embed").embedding.numpy(),
                                  model.get_layer("backbone").get_layer("pos_embed").embedding.numpy())
    assert bigger.predict(np.zeros((1, 48, 48, 3), "float32"), verbose=0).shape == (1, 10)


# --- bad configurations --------------------------------------------------------------------------------------

BAD = [
    (build_vit, {"patch_size": 5}, "patch_size"),
    (build_vit, {"dim": 30, "num_heads": 4}, "num_heads"),
    (build_vit, {"depth": 0}, "depth"),
    (build_vit, {"dim": 0}, "dim"),
    (build_vit, {"drop_path_rate": 1.0}, "drop_path_rate"),
    (build_vit, {"patch_size": 4, "pos_embed_grid": (8, 0)}, "pos_embed_grid"),
    (build_vit_moe, {"patch_size": 4, "dim": 32, "num_heads": 2, "num_experts": 2, "top_k": 3}, "top_k"),
    (build_vit_moe, {"patch_size": 4, "dim": 32, "num_heads": 2, "capacity_factor": 0.0}, "capacity_factor"),
    (build_vit_moe, {"patch_size": 4, "dim": 32, "num_heads": 2, "num_experts": 0}, "num_experts"),
    (build_resnet, {"depths": (2, 0)}, "depths"),
    (build_resnet, {"depths": (2, 2), "widths": (8,)}, "equally long"),
    (build_resnet, {"widths": (64, 0, 256, 512)}, "widths"),
    (build_resnet, {"block": "dense"}, "block"),
    (build_resnet, {"stem": "huge"}, "stem"),
    (build_mlp, {"widths": ()}, "widths"),
    (build_mlp, {"widths": (0,)}, "widths"),
    (build_mlp, {"norm": "group"}, "norm"),
    (build_mlp, {"dropout": 1.5}, "dropout"),
    (build_mlp, {"activation": "no_such_activation"}, "no_such_activation"),
]


@pytest.mark.parametrize("builder, kwargs, message", BAD, ids=[f"{b.__name__}-{m}" for b, _, m in BAD])
def test_bad_configuration_raises_value_error(builder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        builder((32, 32, 3), **kwargs)


def test_unknown_input_size_raises_value_error():
    with pytest.raises(ValueError, match="fixed input"):
        build_vit((None, None, 3), patch_size=4)
    with pytest.raises(ValueError, match="known input"):
        build_mlp((None, None, 3))


def test_create_model_reports_a_bad_input_size_as_invalid_argument():
    with pytest.raises(InvalidArgumentError, match="patch_size"):
        zoo.create_model("vit_pico_p4", input_shape=(30, 30), pretrained=False)
