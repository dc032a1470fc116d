"""Embeddings, intermediates, layer-wise probing and CKA maps, through the public API and the command line;
each checked against what the model's own layers compute, read directly."""

import json

import numpy as np
import pytest

import zoo
from zoo.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def digits_model():
    return zoo.create_model("resnet_tiny.digits", num_classes=5, input_shape=(16, 16))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")


def test_intermediates_are_the_backbone_stage_outputs(digits_model, images):
    import keras

    maps = zoo.intermediates(digits_model, images)
    entry = zoo.entry_of(digits_model)
    assert list(maps) == [str(s) for s in entry.strides] == ["1", "2", "4"]
    body = digits_model.get_layer("backbone")
    normalised = digits_model.get_layer("preprocessing")(images)
    for key, name in zip(maps, entry.stages):
        direct = keras.Model(body.input, body.get_layer(name).output)(normalised)
        np.testing.assert_allclose(maps[key], direct, rtol=1e-5, atol=1e-5)
    pooled = zoo.intermediates(digits_model, images, pool="avg", stages=["4"])
    np.testing.assert_allclose(pooled["4"], maps["4"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_intermediates_of_a_zoo_model_nested_in_a_users_model(digits_model, images):
    import keras

    x = inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="mine")(digits_model(x)))
    np.testing.assert_allclose(zoo.intermediates(outer, images)["2"], zoo.intermediates(digits_model, images)["2"],
                               atol=1e-5)


def test_vit_block_tokens_with_and_without_the_class_token():
    model = zoo.create_model("vit_pico_p4", num_classes=3, pretrained=False)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    tokens = zoo.intermediates(model, x)
    assert list(tokens) == ["block2", "block4", "block6"] and tokens["block2"].shape == (2, 65, 96)
    patches = zoo.intermediates(model, x, class_token=False, stages=["block6"])["block6"]
    np.testing.assert_allclose(patches, tokens["block6"][:, 1:], atol=1e-5)
    cls = zoo.intermediates(model, x, pool="token", stages=["block6"])["block6"]
    np.testing.assert_allclose(cls, tokens["block6"][:, 0], atol=1e-5)


def test_embed_gives_what_the_head_reads_with_the_labels(digits_model):
    import keras

    from zoo.data import load

    options = {"classes": [5, 6, 7, 8, 9]}
    emb = zoo.embed(digits_model, "digits", split="test", data_options=options)
    _, _, test, info = load("digits", model=digits_model, shuffle=False, **options)
    pool = keras.Model(digits_model.input, digits_model.get_layer("pool").output)
    direct = np.concatenate([pool(x) for x, _ in test])
    labels = np.concatenate([y for _, y in test])
    np.testing.assert_allclose(emb.features, direct, atol=1e-5)
    np.testing.assert_array_equal(emb.labels, labels)
    assert emb.class_names == ("5", "6", "7", "8", "9") and emb.features.shape == (info.num_examples["test"], 128)
    stage = zoo.embed(digits_model, "digits", split="test", data_options=options, layer="stage2_block2_out")
    assert stage.features.shape == (len(labels), 64)


def test_the_bundled_simclr_backbone_transfers_to_unseen_digits_better_than_random_init():
    """The README's transfer table, one cell: kNN with 5 labels per class on digits 5-9 (0.900; random init
    0.68 to 0.84 over seeds)."""
    import keras

    keras.utils.set_random_seed(0)
    options = {"classes": [5, 6, 7, 8, 9], "test_fraction": 0.5}
    scores = {}
    for name in ("resnet_tiny.simclr_digits", "resnet_tiny"):
        model = zoo.create_model(name, pretrained=name != "resnet_tiny", input_shape=(16, 16))
        train, test = (zoo.embed(model, "digits", split=s, data_options=options) for s in ("train", "test"))
        few = np.concatenate([np.flatnonzero(train.labels == c)[:5] for c in range(5)])
        scores[name] = zoo.knn_accuracy(train.features[few], train.labels[few], test.features, test.labels, k=20)
    assert scores["resnet_tiny.simclr_digits"] > scores["resnet_tiny"] + 0.03, scores


def test_bad_inputs_are_one_line_errors(digits_model, images):
    from conftest import tiny_model

    with pytest.raises(InvalidArgumentError, match="did you mean stage1_block2_out"):
        zoo.intermediates(digits_model, images, stages=["stage1_blok2_out"])
    with pytest.raises(InvalidArgumentError, match=r"takes images of shape \(16, 16, 3\)"):
        zoo.intermediates(digits_model, images[:, :8])
    with pytest.raises(InvalidArgumentError, match="declares no stage outputs"):
        zoo.intermediates(tiny_model(), images)
    assert set(zoo.intermediates(tiny_model(), images, stages=["relu1"])) == {"relu1"}
    with pytest.raises(InvalidArgumentError, match="unknown split"):
        zoo.embed(digits_model, "digits", split="dev")


def test_layerwise_probe_scores_each_stage_as_the_probes_do_on_its_features(digits_model):
    from zoo.data import load
    from zoo.represent.features import intermediates
    from zoo.represent.layerwise import probe_layers, probe_table

    options = {"classes": [5, 6, 7, 8, 9], "per_class": 10}
    rows = probe_layers(digits_model, "digits", data_options=options, k=5)
    assert [r.layer for r in rows] == ["1", "2", "4", "embedding"]
    train, _, test, _ = load("digits", model=digits_model, shuffle=False, **options)
    x_train, y_train = (np.concatenate(p) for p in zip(*[(x, y) for x, y in train]))
    x_test, y_test = (np.concatenate(p) for p in zip(*[(x, y) for x, y in test]))
    fit = intermediates(digits_model, x_train, stages=["2"], pool="avg")["2"]
    score = intermediates(digits_model, x_test, stages=["2"], pool="avg")["2"]
    assert rows[1].knn == zoo.knn_accuracy(fit, y_train, score, y_test, k=5)
    assert rows[1].linear == zoo.linear_probe(fit, y_train, score, y_test).accuracy
    assert rows[1].width == 64 and 0.2 < rows[-1].knn <= 1.0
    text = probe_table({"pretrained": rows})
    assert text.splitlines()[0].split() == ["layer", "width", "kNN", "pretrained", "linear", "pretrained"]


def test_compare_layers_of_a_model_with_itself_has_a_unit_diagonal(digits_model):
    from zoo.data import load
    from zoo.represent.layerwise import compare_layers

    test = load("digits", model=digits_model, batch_size=64, shuffle=False)[2]
    matrix, rows, columns = compare_layers(digits_model, digits_model, test)
    assert rows == columns == ["1", "2", "4"] and matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    assert (matrix < 1.0 - 1e-3)[~np.eye(3, dtype=bool)].all()


def test_commands_embed_probe_and_compare(tmp_path, capsys):
    from PIL import Image

    from zoo.cli import main

    out = tmp_path / "emb.npz"
    assert main(["embed", "resnet_tiny.digits", "--classes", "5,6,7,8,9", "--out", str(out), "--plot", "tsne",
                 "--projector", str(tmp_path / "projector")]) == 0
    saved = np.load(out)
    assert saved["features"].shape[0] == len(saved["labels"]) and list(saved["class_names"]) == list("56789")
    with Image.open(tmp_path / "emb.tsne.png") as picture:
        assert picture.size[0] > 500
    rows = (tmp_path / "projector" / "tensors.tsv").read_text().splitlines()
    assert len(rows) == len(saved["labels"]) and len(rows[0].split("\t")) == saved["features"].shape[1]

    assert main(["probe", "resnet_tiny.digits", "--classes", "5,6,7,8,9", "--per-class", "5",
                 "--out", str(tmp_path / "probe.png")]) == 0
    text = capsys.readouterr().out
    assert "kNN resnet_tiny (random init)" in text and "embedding" in text
    assert (tmp_path / "probe.png").stat().st_size > 0

    assert main(["compare", "resnet_tiny.digits", "resnet_tiny", "--examples", "200", "--batch-size", "50",
                 "--out", str(tmp_path / "cka.png")]) == 0
    text = capsys.readouterr().out
    assert "resnet_tiny.digits (rows) against resnet_tiny (random init) (columns)" in text
    diagonal = [float(line.split()[i + 1]) for i, line in enumerate(text.splitlines()[3:6])]
    assert all(0 < v < 0.999 for v in diagonal)  # a pretrained network is not its random initialisation
    assert (tmp_path / "cka.png").stat().st_size > 0

    assert main(["probe", "resnt_tiny", "--out", str(tmp_path / "p.png")]) == 2
    assert main(["embed", "resnet_tiny.digits", "--classes", "5,11", "--out", str(tmp_path / "e.npz")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "did you mean resnet_tiny" in errors[0] and "has no class 11" in errors[1]
    assert not (tmp_path / "e.npz").exists()


def test_the_label_efficiency_curve_fine_tunes_each_point_pretrained_and_from_scratch(tmp_path, monkeypatch):
    from zoo import jobs
    from zoo.config import RunConfig

    monkeypatch.setattr(jobs, "CURVE", (1, 3))
    weights = tmp_path / "mlp.weights.h5"  # a small network's "pretrained" weights: the curve's machinery is tested
    zoo.save_backbone_weights(zoo.create_model("mlp_small", pretrained=False, input_shape=(16, 16)), weights)
    config = RunConfig.from_dict({**jobs.BUNDLED_TASK, "model": "mlp_small", "pretrained": str(weights),
                                  "image_size": [16, 16], "epochs": 1, "baseline": False, "curve": True,
                                  "run_dir": str(tmp_path / "run")})
    summary = jobs.run_finetune(config, verbose=0)
    curve = summary["curve"]
    assert curve["per_class"] == [1, 3] and "knn_before_training" not in summary
    for n, pretrained, scratch in zip(curve["per_class"], curve["pretrained"], curve["scratch"]):
        point, base = tmp_path / "run" / "curve" / f"{n}_per_class", tmp_path / "run" / "curve" / f"{n}_scratch"
        assert json.loads((point / "metrics.json").read_text())["test_accuracy"] == pretrained
        assert json.loads((base / "metrics.json").read_text())["test_accuracy"] == scratch
        data = json.loads((point / "fingerprint.json").read_text())["data"]["num_examples"]
        assert data["train"] == 5 * n and data["test"] > 600  # the same held-out test split at every point
    assert (tmp_path / "run" / "label_efficiency.png").stat().st_size > 0
    assert "| 3 |" in (tmp_path / "run" / "README.md").read_text()
