"""The catalog as data: listing, naming and describing models without TensorFlow."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.errors import UnknownModelError
from zoo.registry import resolve, specs

KERAS_CONSTRUCTORS = 40


def test_listing_and_describing_never_import_tensorflow_or_keras():
    code = ("import sys, zoo; zoo.list_models(); zoo.list_models('resnet*', pretrained=True); "
            "zoo.model_info('resnet50'); zoo.families(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_keras_applications_constructor_has_an_imagenet_tag():
    keras_specs = [s for s in specs() if s.source == "keras.applications"]
    assert len(keras_specs) == KERAS_CONSTRUCTORS
    assert len({s.builder_kwargs["constructor"] for s in keras_specs}) == KERAS_CONSTRUCTORS
    for spec in keras_specs:
        (weight,) = spec.weights
        assert weight.tag == "imagenet" and weight.num_classes == 1000 and weight.license
        assert weight.url.endswith(".h5") and "notop" in weight.file_name.replace("no_top", "notop")
        assert set(spec.stages) <= {4, 8, 16, 32} and len(spec.stages) == 4, spec.arch
        assert spec.first_conv


def test_catalog_matches_the_file_names_urls_and_hashes_keras_uses():
    """The shared record read from keras 3.15.1's own modules (no network needed)."""
    record = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "keras_applications_weights.json"
    if not record.exists():
        pytest.skip("../shared/data is not beside this checkout")
    expected = {c: a for c, top, a in json.loads(record.read_text()) if not top}
    for spec in specs():
        if spec.source != "keras.applications":
            continue
        want, got = expected[spec.builder_kwargs["constructor"]], spec.weights[0]
        assert (got.file_name, got.url, got.file_hash, got.cache_subdir) == (
            want["fname"], want["origin"], want["file_hash"], want["cache_subdir"]), spec.arch


def test_list_models_filters_by_pattern_pretrained_and_family():
    assert zoo.list_models("efficientnet_b*", pretrained=True) == sorted(
        [f"efficientnet_b{i}.imagenet" for i in range(8)] + ["efficientnet_b0.ra_in1k"])  # timm's, via keras-hub
    assert zoo.list_models("resnet5*", pretrained=True) == ["resnet50.a1_in1k", "resnet50.imagenet",
                                                            "resnet50v2.imagenet"]
    assert zoo.list_models(family="convnext") == [f"convnext_{s}.imagenet" for s in
                                                  ["base", "large", "small", "tiny", "xlarge"]]
    assert zoo.list_models("no_such_thing*") == []
    everything = zoo.list_models()
    assert set(zoo.list_models(pretrained=True)) | set(zoo.list_models(pretrained=False)) == set(everything)


def test_bare_arch_resolves_to_its_default_tag():
    spec, weight = resolve("resnet50")
    assert (spec.arch, weight.tag) == ("resnet50", "imagenet")
    assert zoo.model_info("resnet50")["name"] == "resnet50.imagenet"


def test_model_info_describes_weights_and_says_when_keras_has_no_hash():
    info = zoo.model_info("mobilenetv2.imagenet")
    assert info["weights"]["file_hash"] is None
    assert "no hash" in info["weights"]["verification"]
    info = zoo.model_info("efficientnet_b0")
    assert info["input_size"] == (224, 224, 3) and info["preprocessing"] == "builtin"
    assert info["weights"]["verification"] == "md5" and info["weights"]["dataset"] == "imagenet-1k"
    assert zoo.model_info("convnext_tiny")["weights"]["verification"] == "sha256"


def test_unknown_names_and_tags_suggest_what_to_do():
    with pytest.raises(UnknownModelError, match="did you mean resnet50"):
        resolve("resnt50")
    with pytest.raises(UnknownModelError, match="its tags: imagenet"):
        resolve("resnet50.laion")
    assert isinstance(UnknownModelError("x"), zoo.ZooError)


def _measure_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "measure_catalog.py"
    spec = importlib.util.spec_from_file_location("measure_catalog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_architecture_has_its_parameters_and_gflops_measured():
    from zoo.registry import measured, specs

    missing = [s.arch for s in specs() if not measured(s)]
    assert not missing, f"run python scripts/measure_catalog.py {' '.join(missing)}"


def test_the_measured_figures_are_what_the_models_give():
    import keras

    from zoo.registry import measured, resolve

    script = _measure_script()
    spec, _ = resolve("resnet_tiny")
    assert script.measure(spec) == measured(spec)  # the committed file is not stale
    # the profiler's count against the convolutions' multiply-adds counted by hand (2 FLOPs each): BatchNorm,
    # bias and the residual additions add the few percent more
    model = zoo.create_model("resnet_tiny", pretrained=False)
    convolutions = [layer for layer in model.get_layer("backbone").layers
                    if isinstance(layer, keras.layers.Conv2D)]
    by_hand = sum(2 * layer.output.shape[1] * layer.output.shape[2] * layer.kernel.shape[0] * layer.kernel.shape[1]
                  * layer.kernel.shape[2] * layer.kernel.shape[3] for layer in convolutions) / 1e9
    assert by_hand <= measured(spec)["gflops"] <= 1.05 * by_hand
    assert measured(spec)["params"] == model.get_layer("backbone").count_params()


def test_published_top1_figures_name_catalog_entries():
    from zoo.catalog import keras_apps, keras_hub
    from zoo.registry import specs

    constructors = {s.builder_kwargs["constructor"] for s in specs() if s.source == "keras.applications"}
    assert set(keras_apps.TOP1) <= constructors
    assert set(keras_hub.TOP1) <= set(zoo.list_models(pretrained=True))
    assert zoo.model_info("resnet50")["weights"]["top1"] == 0.749  # keras.io's table
