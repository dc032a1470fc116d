"""Backbones through keras-hub: parity with the reference implementations on the fixtures that
scripts/make_hub_fixtures.py wrote with timm and transformers, catalog entries that build offline, bad input."""
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import shapes_only

import zoo
from zoo.errors import InvalidArgumentError, WeightsError, WeightsNotFoundError

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_hub_fixtures", ROOT / "scripts" / "make_hub_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timm_checkpoint(directory: Path, fixture: str = "timm_resnet18") -> Path:
    """A timm checkpoint directory: the fixture's config, and the seeded weights the script gave timm."""
    from safetensors.numpy import save_file

    directory.mkdir()
    shutil.copy(FIXTURES / fixture / "config.json", directory)
    manifest = json.loads((FIXTURES / fixture / "manifest.json").read_text())
    tensors = _script().weights(manifest)
    if (FIXTURES / fixture / "batchnorm.npz").is_file():  # the statistics the script measured
        tensors.update({k: v.astype("float32") for k, v in np.load(FIXTURES / fixture / "batchnorm.npz").items()})
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def relative_error(model, fixture: Path) -> float:
    want = np.load(fixture / "expected.npy")
    got = model.predict(np.load(fixture / "x.npy"), verbose=0)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("fixture, family", [("timm_resnet18", "timm_resnet"),
                                             ("timm_efficientnet_b0", "timm_efficientnet")])
def test_a_timm_directory_computes_what_timm_computes(tmp_path, fixture, family):
    model = zoo.create_model(timm_checkpoint(tmp_path / fixture, fixture))  # raw 0-255 images, average-pooled
    assert zoo.entry_of(model).family == family and zoo.entry_of(model).preprocessing == "torch"
    assert relative_error(model, FIXTURES / fixture) < 1e-4


@pytest.mark.parametrize("name", ["dinov2_tiny", "vit_tiny", "deit_tiny", "swin_tiny"])
def test_a_transformers_directory_computes_what_transformers_computes(name):
    # at the checkpoint's own image size: no position-embedding interpolation, so float32 round-off only
    model = zoo.create_model(FIXTURES / name)  # the class token, normalised with its preprocessor_config.json
    assert relative_error(model, FIXTURES / name) < 1e-5


@pytest.mark.slow
def test_a_checkpoint_directory_fine_tunes_and_survives_a_fresh_process(tmp_path):
    model = zoo.create_model(FIXTURES / "dinov2_tiny", num_classes=3)
    before = model.get_layer("backbone").get_weights()
    x = np.random.default_rng(0).uniform(0, 255, (8, 56, 56, 3)).astype("float32")
    import tensorflow as tf

    train = tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 3)).batch(4)
    zoo.finetune(model, (train,), recipe="full", epochs=1, patience=None, verbose=0)
    after = model.get_layer("backbone").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "w.npz", **{v.path: v.numpy() for v in model.weights})
    code = textwrap.dedent(f"""
        import numpy as np, zoo
        saved = np.load(r"{tmp_path}/w.npz")
        for v in zoo.load_model(r"{tmp_path}/m.keras").weights:
            print(v.path, np.abs(v.numpy() - saved[v.path]).max() / max(np.abs(saved[v.path]).max(), 1e-12))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())
    assert len(errors) == len(model.weights)
    # keras-hub saves DINOv2's trained position table re-interpolated (bicubic) to the checkpoint's grid and
    # interpolates it back on load: that one table reloads within 1%, every other weight exactly
    table = "embeddings/interpolated_position_embeddings"
    assert float(errors.pop(next(k for k in errors if k.endswith(table)))) < 1e-2
    assert all(float(e) == 0.0 for e in errors.values())


# keras-hub publishes each preset's parameter count: the catalog's configs build the same networks
@pytest.mark.parametrize("name, input_shape, backbone_class, preset", [
    ("resnet18.a1_in1k", None, "ResNetBackbone", "resnet_18_imagenet"),
    ("mobilenetv3_large_100.ra_in1k", None, "MobileNetBackbone", "mobilenet_v3_large_100_imagenet"),
    ("densenet121.tv_in1k", None, "DenseNetBackbone", "densenet_121_imagenet"),
    ("dinov2_small.lvd142m", (518, 518), "DINOV2Backbone", "dinov2_small"),  # at its position table's size
])
def test_catalog_entries_build_offline_as_keras_hubs_presets(name, input_shape, backbone_class, preset):
    import keras_hub

    with shapes_only():
        model = zoo.create_model(name, pretrained=False, input_shape=input_shape)
        published = getattr(keras_hub.models, backbone_class).presets[preset]["metadata"]["params"]
        assert model.get_layer("backbone").count_params() == published
        assert zoo.entry_of(model).source == "keras-hub" and zoo.entry_of(model).weights is None


def test_catalog_lists_hub_entries_with_their_handles_and_licences():
    names = zoo.list_models(pretrained=True)
    assert len([n for n in names if zoo.model_info(n)["source"] == "keras-hub"]) >= 15
    assert {"dinov2_small.lvd142m", "resnet50.a1_in1k", "resnet50.imagenet", "efficientnet_b0.ra_in1k"} <= set(names)
    info = zoo.model_info("resnet50.a1_in1k")
    assert info["source"] == "keras-hub" and info["weights"]["url"] == "hf://timm/resnet50.a1_in1k"
    assert zoo.model_info("resnet50")["source"] == "keras.applications"  # the bare name keeps its first source
    assert all(zoo.model_info(n)["weights"]["license"] for n in names)


def test_offline_without_the_files_names_the_handle_and_how_to_import():
    with pytest.raises(WeightsNotFoundError, match="hf://facebook/dinov2-small.*keras-zoo weights import"):
        zoo.create_model("dinov2_small.lvd142m", num_classes=3)


def test_bad_checkpoint_directories_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="has no config.json"):
        zoo.create_model(tmp_path / "empty")
    (tmp_path / "convnext").mkdir()
    (tmp_path / "convnext" / "config.json").write_text(json.dumps({"architecture": "convnext_tiny"}))
    with pytest.raises(InvalidArgumentError, match="keras-hub cannot build this checkpoint.*timm resnet"):
        zoo.create_model(tmp_path / "convnext", pretrained=False)
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES / "dinov2_tiny", broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(WeightsError, match="do not load"):
        zoo.create_model(broken)
    with pytest.raises(InvalidArgumentError, match="in_channels=1 with a checkpoint's weights"):
        zoo.create_model(FIXTURES / "dinov2_tiny", in_channels=1)
    gray = zoo.create_model(FIXTURES / "dinov2_tiny", in_channels=1, pretrained=False)  # random weights: any
    assert gray.input.shape == (None, 56, 56, 1)


def test_a_checkpoint_imported_into_the_store_builds_its_catalog_entry_offline(tmp_path, monkeypatch):
    from zoo import weights

    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "store")
    with pytest.raises(WeightsError, match="another architecture than dinov2_small .hidden_size 32"):
        weights.import_file(FIXTURES / "dinov2_tiny", "dinov2_small.lvd142m")
    checkpoint = timm_checkpoint(tmp_path / "downloaded")
    stored = weights.import_file(checkpoint, "resnet18.a1_in1k")
    assert sorted(p.name for p in stored.iterdir()) == ["config.json", "model.safetensors"]
    model = zoo.create_model("resnet18.a1_in1k", input_shape=(64, 64))  # KERAS_ZOO_OFFLINE is set
    assert zoo.entry_of(model).name == "resnet18.a1_in1k"
    assert relative_error(model, FIXTURES / "timm_resnet18") < 1e-4
    weights_file = stored / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-100])  # a partial download
    with pytest.raises(WeightsError, match="damaged or partial: it was not loaded"):
        zoo.create_model("resnet18.a1_in1k", input_shape=(64, 64))


def test_a_hub_handle_is_its_catalog_entry_or_a_checkpoint_fetched_into_the_store(tmp_path, monkeypatch):
    from zoo import weights

    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path)
    assert weights.hub_name("hf://facebook/dinov2-small") == ("dinov2_small.lvd142m", None)
    with pytest.raises(WeightsNotFoundError, match="hf://someone/new-model: its config.json, model.safetensors "
                                                   "are not in .* KERAS_ZOO_OFFLINE is set"):
        zoo.create_model("hf://someone/new-model")
    fetched = tmp_path / "hub" / "hf__someone__new-model"  # as a download leaves it
    shutil.copytree(FIXTURES / "dinov2_tiny", fetched)
    model = zoo.create_model("hf://someone/new-model")
    assert relative_error(model, FIXTURES / "dinov2_tiny") < 1e-5


def test_a_catalog_checkpoint_downloads_at_its_pinned_revision(tmp_path, monkeypatch):
    import huggingface_hub

    from zoo import compat, weights

    asked = []

    def hub_download(repo_id, filename, revision=None):
        asked.append((repo_id, filename, revision))
        return str(tmp_path / "downloaded" / filename)

    timm_checkpoint(tmp_path / "downloaded")
    monkeypatch.setattr(weights, "cache_dir", lambda: tmp_path / "store")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_download)
    monkeypatch.setattr(compat, "hub_file", lambda handle, name: pytest.fail("an unpinned download"))
    spec, weight = zoo.registry.resolve("resnet18.a1_in1k")
    stored = weights.download(weight)
    pinned = "491b427b45c94c7fb0e78b5474cc919aff584bbf"
    assert asked == [("timm/resnet18.a1_in1k", "config.json", pinned),
                     ("timm/resnet18.a1_in1k", "model.safetensors", pinned)]
    assert stored.read_bytes() == (tmp_path / "downloaded" / "model.safetensors").read_bytes()
    unpinned = [w for s in zoo.registry.specs() for w in s.weights if w.url and w.url.startswith("hf://")
                and not w.revision]
    assert 0 < len(unpinned) < 8  # the handles no pinned commit was found for follow the main branch


# keras-hub's own pyramid outputs (P2 is stride 4) are where the catalog says each timm stage ends
@pytest.mark.parametrize("arch", ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "densenet121"])
def test_timm_stages_end_at_keras_hubs_pyramid_levels(arch):
    from zoo import hub

    spec = next(s for s in zoo.registry.specs() if s.arch == arch and s.source == "keras-hub")
    with shapes_only():
        body = hub.build((64, 64, 3), **spec.builder_kwargs)
        pyramid = getattr(body, "pyramid_outputs", None)  # MobileNetV3 has none in keras-hub
        for stride, name in spec.stages.items():
            if pyramid:
                assert body.get_layer(name).output is pyramid[f"P{stride.bit_length() - 1}"]
        model = zoo.create_model(f"{arch}.{spec.weights[0].tag}", pretrained=False, features_only=True,
                                 input_shape=(64, 64))
        assert [v.shape[1] for v in model.output.values()] == [64 // s for s in sorted(spec.stages)]


def dinov2_block(path: str) -> int | None:
    """The encoder block a variable of the DINOv2 fixture belongs to (None outside the encoder)."""
    parts = path.split("/")
    return int(parts[parts.index("encoder") + 1].removeprefix("layers_")) if "encoder" in parts else None


def test_a_dinov2_checkpoint_freezes_and_decays_block_by_block():
    import keras

    from zoo.training import group_multipliers, groups, make_optimizer

    model = zoo.create_model(FIXTURES / "dinov2_tiny", num_classes=3)  # 2 blocks: one group each, then the head
    gs = groups(model)
    assert [g.name for g in gs] == ["stage1", "stage2", "head"]
    assert [layer.name for layer in gs[1].layers] == ["layers_1", "layernorm"]
    assert sum(g.params for g in gs) == model.count_params()
    # timm's layer decay: the head at 1, the top block at d, the embeddings and the first block at d**2
    optimizer = make_optimizer("adam", 1e-3, multipliers=group_multipliers(gs, layer_decay=0.5))
    for v in model.weights:
        block = dinov2_block(v.path)
        want = 1.0 if v.path.startswith("head/") else 0.5 if block == 1 or v.path.startswith("layernorm/") else 0.25
        assert optimizer.multiplier(v.path) == want, v.path

    zoo.freeze(model)
    zoo.unfreeze(model, blocks=1)  # the top block, the final norm and the head
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {v.path: v.numpy().copy() for v in model.weights}
    x = np.random.default_rng(0).uniform(0, 255, (8, 56, 56, 3)).astype("float32")
    model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    changed = {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}
    want = {v.path for v in model.weights if dinov2_block(v.path) == 1 or v.path.split("/")[0] in ("layernorm", "head")}
    assert changed == want


def test_lora_adapts_a_vits_query_and_value_projections():
    model = zoo.create_model(FIXTURES / "vit_tiny", num_classes=3)
    config = json.loads((FIXTURES / "vit_tiny" / "config.json").read_text())
    depth, width, heads = (config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads"))
    rank = 2
    assert sorted(zoo.apply_lora(model, rank=rank)) == ["query"] * depth + ["value"] * depth
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # Keras's EinsumDense adapters: A maps the input to (heads, rank), B the rank to one head's width
    adapters = width * heads * rank + rank * width // heads
    assert trainable == depth * 2 * adapters + (width + 1) * 3  # and the head
    with pytest.raises(InvalidArgumentError, match="no layer matching nothing"):
        zoo.apply_lora(zoo.create_model(FIXTURES / "vit_tiny", num_classes=3), targets=("nothing",))


def test_a_vit_checkpoint_at_another_size_resizes_its_position_grid_as_an_image(tmp_path):
    from safetensors.numpy import load_file, save_file

    # the fixture's 4x4 grid of positions made a quadratic surface in every channel: resized as an image with
    # pixel centres at half steps, by cubic convolution (timm's and keras-hub's way: Keys' kernel reproduces
    # quadratics, where bilinear would not), it stays that surface sampled at the new centres, away from the
    # border that the interpolation clamps
    checkpoint = tmp_path / "vit"
    shutil.copytree(FIXTURES / "vit_tiny", checkpoint)
    tensors = load_file(checkpoint / "model.safetensors")
    key = "vit.embeddings.position_embeddings"
    rows, columns = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij")
    surface = 0.5 + 0.3 * rows - 0.2 * columns + 0.05 * rows**2
    table = tensors[key].copy()
    table[0, 1:] = np.repeat(surface.reshape(16, 1), 32, axis=1)
    tensors[key] = table
    save_file(tensors, str(checkpoint / "model.safetensors"))

    native = zoo.create_model(checkpoint)
    model = zoo.create_model(checkpoint, input_shape=(128, 128))  # a 16x16 grid
    assert model.output.shape == (None, 32)
    got = {v.path: v.numpy() for v in model.get_layer("backbone").weights}
    for v in native.get_layer("backbone").weights:  # every other weight is the checkpoint's
        if "position" not in v.path:
            np.testing.assert_array_equal(got[v.path], v.numpy())
    resized = next(value for path, value in got.items() if "position" in path).reshape(257, 32)
    np.testing.assert_array_equal(resized[0], table[0, 0])  # the class token's row is kept
    centre = (np.arange(16.0) + 0.5) / 4 - 0.5  # new pixel centres in the old grid's coordinates
    want = 0.5 + 0.3 * centre[:, None] - 0.2 * centre[None, :] + 0.05 * centre[:, None] ** 2
    inner = slice(6, 10)  # whose four cubic taps (old pixels 0..3) all lie inside the old grid
    np.testing.assert_allclose(resized[1:].reshape(16, 16, 32)[inner, inner, 0], want[inner, inner], atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="cannot build .*60x60|divisible"):
        zoo.create_model(checkpoint, input_shape=(60, 60))


def test_info_on_a_checkpoint_directory_says_where_its_normalisation_comes_from(tmp_path, capsys):
    from zoo import cli

    bare = tmp_path / "vit_without_preprocessor"
    shutil.copytree(FIXTURES / "vit_tiny", bare, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    assert cli.main(["info", str(bare)]) == 0
    out = capsys.readouterr().out
    assert "the catalog family vit's mean and std (the checkpoint has no preprocessing config)" in out
    assert "preprocessing  tf" in out  # Google's ViT: mean and std 0.5
    assert cli.main(["info", str(FIXTURES / "dinov2_tiny")]) == 0
    out = capsys.readouterr().out
    assert "mean and std from its preprocessor_config.json" in out and "preprocessing  torch" in out
    assert "stages         1: encoder/layers_0, 2: encoder/layers_1" in out


def test_cached_features_and_the_representation_tools_work_on_a_hub_backbone():
    from zoo.data import load
    from zoo.evaluation import evaluate

    model = zoo.create_model(FIXTURES / "dinov2_tiny", num_classes=10)
    options = {"per_class": 6}
    result = zoo.finetune(model, "digits", recipe="linear_probe", epochs=2, data_options=options, verbose=0)
    _, _, test, _ = load("digits", model=model, batch_size=32, **options)
    through_model = evaluate(result.model, test)  # the whole model, not the cached features
    assert result.metrics["test_accuracy"] == pytest.approx(through_model.accuracy)
    assert result.metrics["test_loss"] == pytest.approx(through_model.loss, rel=1e-4)
    train = zoo.embed(result.model, "digits", split="train", data_options=options)
    test_features = zoo.embed(result.model, "digits", split="test", data_options=options)
    assert train.features.shape[1] == 32  # the class token, width 32
    accuracy = zoo.knn_accuracy(train.features, train.labels, test_features.features, test_features.labels, k=5)
    assert 0.0 <= accuracy <= 1.0


def tiny_siglip_preset(directory: Path) -> tuple[Path, object]:
    """A keras-hub SigLIP preset directory (keras-hub's own saver; random weights at a tiny size) and the backbone."""
    import keras_hub

    from zoo.catalog.keras_hub import _siglip

    config = _siglip(32, 8, 32, 2, 2, 64)
    config["config"]["text_encoder"]["config"]["vocabulary_size"] = 100
    body = keras_hub.models.SigLIPBackbone.from_config(config["config"])
    body.save_to_preset(str(directory))
    (directory / "metadata.json").unlink()  # the store keeps config.json and model.weights.h5 only
    return directory, body


# keras-hub publishes each two-tower preset's parameter count and Kaggle handle: the catalog's configs are those
@pytest.mark.parametrize("arch, backbone_class", [("siglip_base_patch16_224", "SigLIPBackbone"),
                                                  ("clip_vit_base_patch32", "CLIPBackbone")])
def test_image_tower_entries_are_keras_hubs_two_tower_presets(arch, backbone_class):
    import keras
    import keras_hub

    spec = next(s for s in zoo.registry.specs() if s.arch == arch)
    preset = getattr(keras_hub.models, backbone_class).presets[arch]
    with shapes_only():
        whole = keras.saving.deserialize_keras_object(spec.builder_kwargs["config"])  # both towers, as the preset
        assert whole.count_params() == preset["metadata"]["params"] and spec.weights[0].url == preset["kaggle_handle"]
        tower = zoo.create_model(arch, pretrained=False).get_layer("backbone")
        assert tower.count_params() == whole.vision_encoder.count_params()
    with pytest.raises(WeightsNotFoundError, match=f"{preset['kaggle_handle']}.*keras-zoo weights import"):
        zoo.create_model(f"{arch}.{spec.weights[0].tag}")  # KERAS_ZOO_OFFLINE is set


def test_a_keras_hub_siglip_preset_directory_builds_its_image_tower(tmp_path):
    directory, body = tiny_siglip_preset(tmp_path / "siglip")
    model = zoo.create_model(directory)  # the image tower, normalised with SigLIP's mean and std of 0.5
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = body.vision_encoder({"images": images / 127.5 - 1.0})
    np.testing.assert_allclose(model.predict(images, verbose=0), np.asarray(want), atol=1e-5)
    assert zoo.entry_of(model).stages == ("vision_encoder_encoder_block_0", "vision_encoder_encoder_block_1")
    with pytest.raises(WeightsError, match="another architecture than siglip_base_patch16_224"):
        from zoo import weights

        weights.import_file(directory, "siglip_base_patch16_224.webli")


def test_a_fine_tuned_hub_model_saves_as_a_keras_hub_preset(tmp_path):
    import keras_hub

    from zoo.hub import save_preset

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    model = zoo.create_model(timm_checkpoint(tmp_path / "resnet18"), num_classes=3, input_shape=(64, 64), dropout=0.1)
    head = model.get_layer("head")
    head.set_weights([rng.normal(size=w.shape).astype("float32") for w in head.get_weights()])  # as if trained
    files = save_preset(model, tmp_path / "preset")
    assert {"config.json", "model.weights.h5", "task.json", "task.weights.h5", "preprocessor.json"} <= set(files)
    task = keras_hub.models.ImageClassifier.from_preset(str(tmp_path / "preset"))  # raw 0-255 images in
    np.testing.assert_allclose(task.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-4)
    body = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert type(body).__name__ == "ResNetBackbone" and body.count_params() == model.get_layer("backbone").count_params()

    # a class-token head is not keras-hub's generic task: the backbone alone, equal to the model's
    dinov2 = zoo.create_model(FIXTURES / "dinov2_tiny", num_classes=3)
    assert "task.json" not in save_preset(dinov2, tmp_path / "dinov2")
    body = keras_hub.models.Backbone.from_preset(str(tmp_path / "dinov2"))
    x = rng.uniform(0, 255, (2, 56, 56, 3)).astype("float32")
    want = dinov2.get_layer("backbone").predict(dinov2.get_layer("preprocessing")(x), verbose=0)
    np.testing.assert_allclose(body.predict({"images": dinov2.get_layer("preprocessing")(x)}, verbose=0), want,
                               atol=1e-5)
