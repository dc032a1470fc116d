"""Text models and text data: the catalog's keras-hub encoders, raw strings in, parity with transformers on the
committed fixture (scripts/make_hub_fixtures.py), text sources in zoo.data.load, and the fine-tuning recipes on
text."""
import csv
import json
import logging
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import shapes_only

import zoo
from zoo.backbone import entry_of
from zoo.data import load
from zoo.errors import DataError, InvalidArgumentError, ZooError
from zoo.training.groups import freeze, groups, unfreeze

BERT = Path(__file__).parent / "fixtures" / "hub" / "bert_tiny"  # transformers BertModel, random init, own vocab
SENTENCES = json.loads((BERT / "sentences.json").read_text())


def _task(n: int = 96, seed: int = 0) -> tuple[list[str], list[int]]:
    """Texts whose class is which half of the fixture's vocabulary their words come from: learnable."""
    vocab = (BERT / "vocab.txt").read_text().split("\n")[10:310]
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n)]
    return [" ".join(rng.choice(vocab[150 * y:150 * (y + 1)], 8)) for y in labels], labels


def _model(**kwargs) -> keras.Model:
    return zoo.create_model(str(BERT), input_shape=(16,), **kwargs)


@pytest.mark.parametrize("name, params", [("bert_tiny", 4_385_920), ("minilm_l6", 22_713_216),
                                          ("bert_base", 109_482_240)])
def test_text_entries_build_offline_with_the_published_parameter_counts(name, params):
    with shapes_only():
        model = zoo.create_model(name, pretrained=False, pooling="token")
        assert model.count_params() == params
        assert set(model.input) >= {"token_ids", "padding_mask"}  # no vocabulary: token ids in


def test_the_catalog_lists_text_families_with_handles_and_licences():
    assert {"bert_tiny.uncased", "bert_mini.uncased", "bert_small.uncased", "bert_base.uncased",
            "minilm_l6.sentence"} <= set(zoo.list_models(family="bert"))
    for name in ("distilbert_base", "roberta_base", "deberta_v3_small", "minilm_l6"):
        info = zoo.model_info(name)
        assert info["modality"] == "text" and info["weights"]["url"].startswith(("kaggle://", "hf://"))
        assert info["weights"]["license"] and info["weights"]["files"]
    assert zoo.model_info("bert_tiny")["name"] == "bert_tiny.uncased"
    assert zoo.model_info("minilm_l6")["pooling"] == "avg"  # sentence-transformers' mean pooling


def test_a_transformers_bert_directory_matches_transformers():
    tokens = _model(pooling="none").predict(tf.constant(SENTENCES), verbose=0)
    assert np.abs(tokens - np.load(BERT / "expected.npy")).max() < 1e-4
    pooled = _model(pooling="token").predict(tf.constant(SENTENCES), verbose=0)
    assert np.abs(pooled - np.load(BERT / "pooled.npy")).max() < 1e-4


def test_the_models_tokenizer_gives_the_reference_token_ids():
    layer = _model().get_layer("tokenizer")
    packed = layer(tf.constant(SENTENCES))
    np.testing.assert_array_equal(packed["token_ids"].numpy(), np.load(BERT / "token_ids.npy"))
    np.testing.assert_array_equal(packed["padding_mask"].numpy(), np.load(BERT / "padding_mask.npy"))


def test_avg_pooling_is_the_mean_of_the_unpadded_tokens():
    tokens = np.load(BERT / "expected.npy")
    mask = np.load(BERT / "padding_mask.npy")[..., None]
    expected = (tokens * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(_model(pooling="avg").predict(tf.constant(SENTENCES), verbose=0), expected, atol=1e-4)


def test_a_text_model_takes_raw_strings_and_survives_save_and_load(tmp_path):
    model = _model(num_classes=3, pooling="avg")
    model.get_layer("head").set_weights([np.random.default_rng(0).normal(size=(32, 3)).astype("float32"),
                                         np.zeros(3, "float32")])
    path = tmp_path / "text.keras"
    model.save(path)
    again = zoo.load_model(path)
    assert again.input.dtype == "string"
    np.testing.assert_allclose(again.predict(tf.constant(SENTENCES), verbose=0),
                               model.predict(tf.constant(SENTENCES), verbose=0), atol=1e-6)
    assert entry_of(again).arch == "bert_tiny" and entry_of(again).input_size == (16,)


def test_without_preprocessing_a_text_model_takes_token_ids():
    model = _model(include_preprocessing=False, pooling="none")
    feed = {"token_ids": np.load(BERT / "token_ids.npy"), "padding_mask": np.load(BERT / "padding_mask.npy"),
            "segment_ids": np.zeros((4, 16), "int32")}
    assert np.abs(model.predict(feed, verbose=0) - np.load(BERT / "expected.npy")).max() < 1e-4


def test_a_sequence_longer_than_the_position_table_is_cut_and_said(caplog):
    with caplog.at_level(logging.WARNING, logger="zoo.factory"):
        model = zoo.create_model(str(BERT), input_shape=(100,))  # the fixture's table holds 64 positions
    assert model.get_layer("tokenizer").sequence_length == 64
    assert sum("position table" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("kwargs, message", [({"input_shape": (16, 16)}, "a number of tokens"),
                                             ({"in_channels": 1}, "no in_channels"),
                                             ({"pooling": "max"}, "not one for text"),
                                             ({"features_only": True}, "text model")])
def test_bad_text_model_options_are_refused(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        zoo.create_model(str(BERT), **kwargs)


def test_text_groups_are_the_embeddings_and_each_encoder_layer():
    model = _model(num_classes=2)
    found = groups(model)
    assert [g.name for g in found] == ["stage1", "stage2", "stage3", "head"]
    assert {layer.name for layer in found[0].layers} >= {"token_embedding", "position_embedding"}
    assert [layer.name for layer in found[1].layers if layer.weights] == ["transformer_layer_0"]
    freeze(model)
    unfreeze(model, blocks=1)
    body = model.get_layer("backbone")
    trainable = {name for name in ("token_embedding", "transformer_layer_0", "transformer_layer_1")
                 if body.get_layer(name).trainable_weights}
    assert trainable == {"transformer_layer_1"} and model.get_layer("head").trainable_weights


# Text data ----------------------------------------------------------------------------------


def _write_folder(root: Path, texts, labels) -> Path:
    for i, (text, label) in enumerate(zip(texts, labels)):
        folder = root / ("neg", "pos")[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    return root


def test_text_sources_load_the_same_examples(tmp_path):
    texts, labels = _task(40)
    folder = _write_folder(tmp_path / "folder", texts, labels)
    with (tmp_path / "t.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, ("neg", "pos")[y]] for t, y in zip(texts, labels))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": ("neg", "pos")[y]}) + "\n"
                                              for t, y in zip(texts, labels)))
    seen = []
    for source in (folder, tmp_path / "t.csv", tmp_path / "t.jsonl", (texts, labels)):
        train, val, test, info = load(source, batch_size=8, seed=3)
        assert info.modality == "text" and info.num_classes == 2 and info.input_shape is None
        assert sum(info.num_examples.values()) == 40
        x, y = next(iter(train))
        assert x.dtype == tf.string and y.dtype == tf.int32
        seen.append(sorted(t.decode() for batch, _ in test for t in batch.numpy()))
    assert seen[1] == seen[2] == seen[3]  # the same rows: the same split
    assert load((texts, labels))[3].class_names == ("0", "1")
    assert load(tmp_path / "t.csv")[3].class_names == ("neg", "pos")


def test_non_utf8_text_files_are_skipped_with_a_warning_or_refused(tmp_path):
    texts, labels = _task(20)
    folder = _write_folder(tmp_path, texts, labels)
    (folder / "neg" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.warns(UserWarning, match="latin1.txt"):
        info = load(folder)[3]
    assert sum(info.num_examples.values()) == 20 and info.skipped[0].endswith("latin1.txt")
    with pytest.raises(DataError, match="not UTF-8"):
        load(folder, strict=True)


@pytest.mark.parametrize("source, message", [
    ((["a text", " "], [0, 1]), "empty"),
    ((["a text", "another"], [0, "pos"]), "mixes label types"),
])
def test_bad_texts_are_refused(source, message):
    with pytest.raises(DataError, match=message):
        load(source)


def test_a_csv_without_the_columns_is_refused(tmp_path):
    (tmp_path / "x.csv").write_text("sentence,y\nhello,1\n")
    with pytest.raises(DataError, match="name the columns text and label"):
        load(tmp_path / "x.csv")


def test_texts_for_an_image_model_are_refused():
    model = zoo.create_model("resnet_tiny", pretrained=False, num_classes=2)
    with pytest.raises(InvalidArgumentError, match="holds texts"):
        load(_task(20), model=model)
    with pytest.raises(InvalidArgumentError, match="augment"):
        load(_task(20), augment="light")


# The recipes on text ------------------------------------------------------------------------------


def _weights(model, names):
    layers = {layer.name: layer for layer in zoo.compat.flatten_layers(model)}
    return {name: [w.numpy().copy() for w in layers[name].weights if "lora" not in w.path] for name in names}


def _changed(before, after) -> set[str]:
    return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


@pytest.mark.parametrize("recipe, trained, kept", [
    ("linear_probe", {"head"}, {"token_embedding", "transformer_layer_0", "transformer_layer_1"}),
    ("two_phase", {"head", "transformer_layer_1", "transformer_layer_0"}, {"token_embedding"}),
    ("gradual", {"head", "transformer_layer_1"}, set()),
    ("lora", {"head"}, {"token_embedding", "transformer_layer_0", "transformer_layer_1"}),
    ("full", {"head", "token_embedding", "transformer_layer_0", "transformer_layer_1"}, set()),
])
def test_every_recipe_fine_tunes_a_text_model(tmp_path, recipe, trained, kept):
    model = _model(num_classes=2, pooling="avg")
    names = {"head", "token_embedding", "transformer_layer_0", "transformer_layer_1"}
    before = _weights(model, names)
    result = zoo.finetune(model, _task(64), recipe=recipe, epochs=2, batch_size=16, learning_rate=3e-3,
                          verbose=0, run_dir=tmp_path / "run")
    changed = _changed(before, _weights(model, names))
    assert trained <= changed and not (kept & changed), changed
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # a header and one line per epoch
    assert set(result.metrics) >= {"val_accuracy", "test_accuracy"}
    if recipe == "lora":  # adapters on the attention's query and value, merged into the saved model
        assert zoo.load_model(tmp_path / "run" / "model.keras").input.dtype == "string"


def test_a_text_fine_tune_learns():
    model = _model(num_classes=2, pooling="avg")
    result = zoo.finetune(model, _task(160), recipe="full", epochs=6, batch_size=16, learning_rate=3e-3, verbose=0)
    assert result.metrics["test_accuracy"] >= 0.8  # 16 test texts; chance is 0.5


def test_embed_knn_and_cka_work_on_text():
    model = _model(pooling="avg")
    train = zoo.embed(model, _task(96), split="train")
    test = zoo.embed(model, _task(96), split="test")
    assert train.features.shape == (train.labels.shape[0], 32) and test.class_names == ("0", "1")
    direct = model.predict(tf.constant(_task(96)[0]), verbose=0)  # every text's embedding, in the source's order
    assert np.abs(direct[:, None] - train.features[None]).max(-1).min(0).max() < 1e-5  # each one is among them
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    nearest = train.labels[(unit(test.features) @ unit(train.features).T).argmax(1)]  # k=1: the closest text's
    assert zoo.knn_accuracy(train.features, train.labels, test.features, test.labels, k=1) == \
        pytest.approx(np.mean(nearest == test.labels))
    assert abs(float(zoo.cka(train.features, train.features)) - 1.0) < 1e-5


def test_zoo_errors_are_one_line():
    try:
        load((["x"], [0, 1]))
    except ZooError as e:
        assert "\n" not in str(e)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(_task(20))  # clean texts: no warning


# The text main job's parts: the docstring corpus, masked-language-model pretraining, the bundled bert_tiny.pydoc


def test_the_docstring_corpus_splits_into_a_pretraining_and_a_labelled_half():
    from zoo import corpus

    pretraining = corpus.pretraining()
    texts, labels, classes = corpus.labelled()
    assert len(classes) == corpus.PACKAGES and sorted(set(labels)) == list(range(len(classes)))
    assert len(pretraining) > 2 * len(texts) > 1000  # every module pretrains; only 8 packages are labelled
    assert not set(pretraining) & set(texts)  # nothing fine-tuned on was seen in pretraining
    info = load("pydoc")[3]
    assert info.class_names == classes and sum(info.num_examples.values()) == len(texts)


def test_mlm_pretraining_writes_a_preset_that_builds_a_text_model(tmp_path):
    from zoo.represent.mlm import pretrain_mlm

    texts = [t for t in _task(256)[0]]
    path, summary = pretrain_mlm(texts, tmp_path / "bert", vocabulary_size=300, hidden_dim=32, sequence_length=16,
                                 epochs=2, batch_size=32)
    assert summary["texts"] == 256 and 0 <= summary["masked_accuracy"] <= 1
    model = zoo.create_model(str(path), num_classes=2)
    assert model.input.dtype == "string" and model.get_layer("tokenizer").sequence_length == 16
    with pytest.raises(InvalidArgumentError, match="exists"):
        pretrain_mlm(texts, path)


def test_the_bundled_pydoc_bert_takes_strings_pretrained_and_from_scratch():
    pretrained = zoo.create_model("bert_tiny.pydoc", num_classes=8)
    scratch = zoo.create_model("bert_tiny.pydoc", num_classes=8, pretrained=False)
    assert pretrained.input.dtype == "string" and scratch.input.dtype == "string"
    a, b = (m.get_layer("backbone").get_layer("token_embedding").get_weights()[0] for m in (pretrained, scratch))
    assert a.shape == b.shape and not np.allclose(a, b)  # the same network, other weights
    assert entry_of(pretrained).name == "bert_tiny.pydoc" and entry_of(scratch).weights is None
    assert zoo.model_info("bert_tiny.pydoc")["weights"]["verification"] == "sha256"


def test_the_text_job_on_the_command_line_reports_and_predicts(tmp_path, capsys):
    from zoo.cli import main

    run = tmp_path / "run"
    assert main(["finetune", "--model", "bert_tiny.pydoc", "--data", "pydoc", "--recipe", "full", "--epochs", "1",
                 "--per-class", "8", "--batch-size", "8", "--baseline", "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["knn_before_training"]) == {"pretrained", "random init"}
    assert summary["baseline"]["test_accuracy"] is not None and len(summary["misclassified"]) == 5
    card = (run / "README.md").read_text()
    assert "misclassified test texts" in card and summary["misclassified"][0]["text"][:40] in card
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "Return the event loop of this thread.", "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("Return the event loop of this thread.: ") and line.count(",") == 1
    assert main(["predict", str(run), str(BERT / "vocab.txt")]) == 2  # an image file for a text model


@pytest.mark.parametrize("name, classes", [("imdb_reviews", ("neg", "pos")),
                                           ("ag_news_subset", ("World", "Sports", "Business", "Sci/Tech"))])
def test_tfds_text_datasets_load_as_texts(name, classes):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        train, val, test, info = load(f"tfds:{name}", batch_size=8)
    x, y = next(iter(train))
    assert info.modality == "text" and info.class_names == classes and x.dtype == tf.string
    assert sum(info.num_examples.values()) == 24 and int(tf.reduce_max(y)) < len(classes)


def test_a_tfds_text_dataset_fine_tunes():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        result = zoo.finetune(_model(num_classes=4, pooling="avg"), "tfds:ag_news_subset", recipe="full", epochs=1,
                              batch_size=8, verbose=0)
    assert np.isfinite(result.metrics["val_loss"]) and result.model.output.shape[-1] == 4


def test_tuning_searches_text_backbones_and_the_bert_grid(tmp_path):
    import tuning

    grid = tuning.Space({"backbone": "bert_tiny.pydoc", **tuning.BERT_GRID})
    assert (grid.possible("batch_size"), grid.possible("learning_rate"), grid.possible("epochs")) == \
        ([16, 32], [5e-5, 3e-5, 2e-5], [2, 3, 4])  # Devlin et al. 2019, appendix A.3
    result = tuning.search(_task(64), {"backbone": "bert_tiny.pydoc", "recipe": "full", "learning_rate": 1e-3,
                                       "batch_size": 16, "epochs": {"choice": [1, 2]}},
                           tuner="grid", max_trials=2, directory=tmp_path / "tune", patience=None)
    trials = sorted(result.trials, key=lambda t: t["epochs"])
    assert [t["status"] for t in trials] == ["COMPLETED"] * 2
    assert [t["trained_epochs"] for t in trials] == [1, 2]  # each trial trains the epochs the space chose
