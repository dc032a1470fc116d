"""Fine-tuning: freezing that holds, rates in the asked ratio, recipes, cached features, LoRA, runs."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import arrays, datasets, tiny_model  # shared with test_faults

import zoo
from zoo.errors import InvalidArgumentError, ZooError
from zoo.runs import RunExistsError
from zoo.training import TrainingDivergedError, groups, make_optimizer, plan

SMALL = (32, 32)


def weights_of(layers):
    return [w.numpy().copy() for layer in layers for w in layer.weights]


def test_catalog_models_group_by_stage_and_others_by_equal_parameters():
    model = zoo.create_model("resnet50", num_classes=3, pretrained=False, input_shape=SMALL)
    gs = groups(model)
    assert [g.name for g in gs] == ["stage1", "stage2", "stage3", "stage4", "head"]
    assert gs[0].layers[-1].name == "conv2_block3_out" and gs[3].layers[-1].name == "conv5_block3_out"
    fallback = groups(tiny_model())
    assert [g.name for g in fallback] == ["group1", "group2", "group3", "group4", "head"]
    assert [layer.name for layer in fallback[2].layers] == ["conv3"]  # the largest layer stands alone
    assert sum(g.params for g in fallback) == tiny_model().count_params()


def test_frozen_weights_and_batchnorm_statistics_are_unchanged_by_fit():
    model = tiny_model()
    zoo.freeze(model)
    body = [layer for layer in model.layers if layer.name != "head"]
    before, head_before = weights_of(body), weights_of([model.get_layer("head")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*arrays(), epochs=2, verbose=0)
    for got, want in zip(weights_of(body), before):
        np.testing.assert_array_equal(got, want)  # BN moving mean and variance included
    assert any(not np.array_equal(a, b) for a, b in zip(weights_of([model.get_layer("head")]), head_before))


def test_unfreezing_after_fit_really_trains_the_backbone():
    """Plain Keras trains nothing new after an unfreeze without recompiling; the helpers recompile."""
    model = tiny_model()
    zoo.freeze(model)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*arrays(), epochs=1, verbose=0)
    top = model.get_layer("conv3")
    before = top.get_weights()[0].copy()
    zoo.unfreeze(model, blocks=2)  # group3 is conv3, group4 its BatchNorm
    model.fit(*arrays(), epochs=1, verbose=0)
    assert not np.array_equal(top.get_weights()[0], before)
    assert not model.get_layer("conv0").trainable


def test_freeze_to_and_summary():
    model = tiny_model()
    zoo.freeze_to(model, -2)
    summary = zoo.trainable_summary(model).splitlines()
    assert [line.split()[1] for line in summary] == ["frozen", "frozen", "frozen", "trainable", "trainable"]
    zoo.freeze_to(model, 0)
    assert all(line.split()[1] == "trainable" for line in zoo.trainable_summary(model).splitlines())
    with pytest.raises(InvalidArgumentError, match="has 5 groups"):
        zoo.freeze_to(model, 9)
    with pytest.raises(InvalidArgumentError, match="4 blocks below its head"):
        zoo.unfreeze(model, blocks=5)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_learning_rate_multipliers_give_steps_in_the_asked_ratio(name):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    out = keras.layers.Dense(2, name="top")(keras.layers.Dense(4, name="low")(inputs))
    model = keras.Model(inputs, out)
    model.compile(optimizer=make_optimizer(name, 0.01, multipliers={"low": 0.1}), loss="mse")
    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.random.default_rng(1).normal(size=(16, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.mean_squared_error(y, model(x)))
    grads = dict(zip([v.path for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.train_on_batch(x, y)
    step = {v.path: np.abs(v.numpy() - before[v.path]) for v in model.trainable_variables}
    if name == "sgd":  # step = lr * multiplier * gradient
        for path, g in grads.items():
            scale = 0.1 if path.startswith("low") else 1.0
            np.testing.assert_allclose(step[path], 0.01 * scale * np.abs(g.numpy()), rtol=1e-3, atol=1e-7)
    else:  # Adam's first step is lr * multiplier in every coordinate with a gradient
        np.testing.assert_allclose(step["low/kernel"].max(), 0.001, rtol=1e-2)
        np.testing.assert_allclose(step["top/kernel"].max(), 0.01, rtol=1e-2)


@pytest.mark.slow
def test_a_model_compiled_for_finetuning_saves_and_loads_in_a_fresh_process(tmp_path):
    model = zoo.create_model("mobilenetv3_small", num_classes=3, pretrained=False, input_shape=SMALL)
    zoo.freeze(model)
    rate = zoo.training.schedule("one_cycle", 1e-3, total_steps=10)
    model.compile(optimizer=make_optimizer("adamw", rate, multipliers={"head": 2.0}),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = arrays(16, 32)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "p.npy", model.predict(x[:4], verbose=0))
    np.save(tmp_path / "x.npy", x[:4])
    code = textwrap.dedent(f"""
        import numpy as np, zoo
        m = zoo.load_model(r"{tmp_path}/m.keras")
        np.testing.assert_allclose(m.predict(np.load(r"{tmp_path}/x.npy"), verbose=0),
                                   np.load(r"{tmp_path}/p.npy"), rtol=1e-5, atol=1e-6)
        print(type(m.optimizer).__name__, m.optimizer.multipliers)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "DiscriminativeAdamW {'head': 2.0}", out.stderr[-2000:]


def test_discriminative_training_runs_under_xla_and_mixed_precision():
    code = textwrap.dedent("""
        import keras, numpy as np
        from zoo.training import make_optimizer
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, activation="relu", name="low")(inputs)
        out = keras.layers.Dense(3, dtype="float32", name="head")(x)
        model = keras.Model(inputs, out)
        model.compile(optimizer=make_optimizer("adam", 1e-2, multipliers={"low": 0.1}), jit_compile=True,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
        h = model.fit(x, y, epochs=5, verbose=0).history["loss"]
        print("falls" if h[-1] < h[0] else "flat", model.layers[1].compute_dtype)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "falls bfloat16", out.stderr[-2000:]


def test_finetune_trains_a_mixed_precision_copy():
    result = zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=3, learning_rate=3e-3,
                          mixed_precision="mixed_bfloat16", patience=None, verbose=0)
    assert result.model.get_layer("conv1").compute_dtype == "bfloat16"
    assert result.model.get_layer("head").compute_dtype == "float32"
    losses = [h["loss"] for h in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    with pytest.raises(InvalidArgumentError, match="mixed_float16 or mixed_bfloat16"):
        zoo.finetune(tiny_model(), datasets(), mixed_precision="float8", verbose=0)


def test_lora_trains_adapters_only_and_merges_on_save(tmp_path):
    model = tiny_model()
    adapted = zoo.apply_lora(model, rank=2)
    assert adapted == ["conv0", "conv1", "conv2", "conv3"]
    convs = [(3, 8), (8, 16), (16, 16), (16, 32)]
    lora_params = sum(3 * 3 * cin * 2 + 2 * cout for cin, cout in convs)
    head = model.get_layer("head").count_params()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == lora_params + head
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bn_before = weights_of([model.get_layer("bn1")])
    model.fit(*arrays(), epochs=3, verbose=0)
    assert np.abs(model.get_layer("conv1").lora_kernel_b.numpy()).max() > 0
    for got, want in zip(weights_of([model.get_layer("bn1")]), bn_before):
        np.testing.assert_array_equal(got, want)
    x = arrays(8)[0]
    model.save(tmp_path / "lora.keras")
    merged = keras.saving.load_model(tmp_path / "lora.keras")
    np.testing.assert_allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_lora_refuses_a_model_it_cannot_adapt():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    with pytest.raises(InvalidArgumentError, match="no dense, convolution or attention layer"):
        zoo.apply_lora(model)


def test_cached_and_uncached_head_training_agree():
    from zoo.training.features import extract

    train, val = datasets()
    test = val.take(2)
    results, extracted = [], []

    def counting(features, dataset):  # the backbone's passes over the data: train, val and test once each
        extracted.append(int(dataset.cardinality()))
        return extract(features, dataset)

    for cache in (True, False):
        model = tiny_model()
        result = zoo.finetune(model, (train, val, test), recipe="linear_probe", epochs=3, cache_features=cache,
                              shuffle=False, patience=None, verbose=0, extractor=counting)
        results.append((result.model.get_layer("head").get_weights(), [h["loss"] for h in result.history],
                        result.metrics))
        outputs = result.model.predict(test, verbose=0)  # the final evaluation, through the whole model
        labels = np.concatenate([y for _, y in test])
        np.testing.assert_array_equal(result.evaluations["test"].predicted, outputs.argmax(-1))
        np.testing.assert_array_equal(result.evaluations["test"].labels, labels)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, outputs)
        assert result.metrics["test_loss"] == pytest.approx(float(loss), rel=1e-5)
    assert extracted == [6, 3, 2]  # batches of train, val, test: cached once, none when not cached
    (cached_w, cached_loss, cached_m), (plain_w, plain_loss, plain_m) = results
    for a, b in zip(cached_w, plain_w):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cached_loss, plain_loss, rtol=1e-4)
    assert cached_m == pytest.approx(plain_m, rel=1e-4)


def test_features_are_extracted_in_large_chunks_of_one_size_for_every_split():
    from zoo.training.features import extract, extraction_rows

    x, y = arrays(n=300)  # 16x16x3: 256 examples a call, then 44 padded to 256; a split of 10: padded too
    assert extraction_rows(tf.TensorSpec((None, 16, 16, 3))) == 256
    assert extraction_rows(tf.TensorSpec((None, 160, 160, 3))) == 54
    assert extraction_rows(tf.TensorSpec((None, 512, 512, 3))) == 32
    assert extraction_rows(tf.TensorSpec((None,), tf.string)) == 32  # texts
    model = tiny_model()
    body = keras.Model(model.input, model.get_layer("pool").output)
    calls = []
    body.predict_on_batch = lambda batch: calls.append(len(batch)) or keras.Model.predict_on_batch(body, batch)
    features, labels = extract(body, tf.data.Dataset.from_tensor_slices((x, y)).batch(32))
    small, small_labels = extract(body, tf.data.Dataset.from_tensor_slices((x[:10], y[:10])).batch(4))
    assert calls == [256, 256, 256]  # one graph for every call
    np.testing.assert_allclose(features, body.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small, features[:10], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(small_labels, y[:10])


def test_two_phase_trains_the_head_then_the_top_blocks():
    model = tiny_model()
    low, top = model.get_layer("conv0").get_weights()[0].copy(), model.get_layer("conv3").get_weights()[0].copy()
    result = zoo.finetune(model, datasets(shuffle=True), recipe="two_phase", epochs=3, blocks=2, verbose=0,
                          patience=None)
    assert [h["phase"] for h in result.history] == ["head", "finetune", "finetune"]
    np.testing.assert_array_equal(model.get_layer("conv0").get_weights()[0], low)
    assert not np.array_equal(model.get_layer("conv3").get_weights()[0], top)
    assert set(result.metrics) == {"val_loss", "val_accuracy"}


def test_plans_of_every_recipe():
    assert [(p.name, p.epochs, p.trains, p.blocks) for p in plan("gradual", 6, 2, 3)] == [
        ("head", 1, "head", 0), ("top1", 1, "top", 1), ("top2", 1, "top", 2), ("top3", 3, "top", 3)]
    assert [p.trains for p in plan("linear_probe", 2, 2, 4)] == ["head"]
    assert [p.trains for p in plan("full", 2, 2, 4)] == ["all"]
    assert [p.trains for p in plan("lora", 2, 2, 4)] == ["lora"]
    assert [(p.epochs, p.lr_scale) for p in plan("two_phase", 6, 2, 4)] == [(2, 1.0), (4, 0.1)]


@pytest.mark.parametrize("kwargs, text", [
    (dict(recipe="magic"), "unknown recipe 'magic'"),
    (dict(recipe="two_phase", blocks=9), "blocks=9"),
    (dict(learning_rate=0.0), "must be positive"),
    (dict(epochs=0), "positive integer"),
])
def test_bad_options_fail_before_training(kwargs, text):
    with pytest.raises(InvalidArgumentError, match=text):
        zoo.finetune(tiny_model(), datasets(), verbose=0, **kwargs)


def test_a_nan_loss_stops_with_the_phase_and_epoch(tmp_path):
    with pytest.raises(TrainingDivergedError, match="phase 'full', epoch 1: lower the learning rate"):
        zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=2, learning_rate=1e12, optimizer="sgd",
                     run_dir=tmp_path / "run", verbose=0)


def test_nan_images_are_blamed_on_the_data_not_the_learning_rate():
    x, y = arrays()
    x[[3, 7]] = np.nan
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(TrainingDivergedError, match="2 training example.s. hold NaN or infinite values"):
        zoo.finetune(tiny_model(), (train,), recipe="full", epochs=1, patience=None, verbose=0)


def test_a_finished_run_is_never_overwritten_without_asking(tmp_path):
    run_dir = tmp_path / "run"
    zoo.finetune(tiny_model(), datasets(), recipe="linear_probe", epochs=1, run_dir=run_dir, verbose=0)
    assert {"metrics.json", "history.csv", "model.keras", "state.json"} <= {p.name for p in run_dir.iterdir()}
    with pytest.raises(RunExistsError, match="holds a finished run"):
        zoo.finetune(tiny_model(), datasets(), recipe="linear_probe", epochs=1, run_dir=run_dir, verbose=0)
    zoo.finetune(tiny_model(), datasets(), recipe="linear_probe", epochs=1, run_dir=run_dir, overwrite=True,
                 verbose=0)
    assert isinstance(RunExistsError("x"), ZooError)


def test_lr_find_suggests_a_rate_and_restores_the_weights(tmp_path):
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    train, _ = datasets(n=96, shuffle=True)
    found = zoo.lr_find(model, train, steps=30, plot=str(tmp_path / "lr.png"))
    assert 1e-7 <= found.suggestion <= 10 and len(found.losses) == len(found.learning_rates) >= 3
    assert (tmp_path / "lr.png").stat().st_size > 1000
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def two_phase_run(run_dir) -> list:
    """The run the kill-and-resume test interrupts (two phases, the first on cached features); its final weights."""
    model = tiny_model()
    train, val = datasets()  # unshuffled: finetune shuffles each epoch by (seed, epoch)
    zoo.finetune(model, (train, val), recipe="two_phase", epochs=6, blocks=2, cache_features=True, patience=None,
                 run_dir=run_dir, verbose=2)
    return model.get_weights()


KILLABLE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_finetune import two_phase_run
    two_phase_run({run!r})
""")


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_with_the_same_weights(tmp_path, caplog):
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE.format(tests=os.path.dirname(__file__), run=str(run))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "state.json"
    while proc.poll() is None:  # kill it in the second phase, between or during epochs
        if state.exists() and len(json.loads(state.read_text())["history"]) >= 3:
            proc.kill()
            break
        time.sleep(0.02)
    assert proc.wait() != 0, "the run finished before it could be killed"
    with caplog.at_level("INFO", logger="zoo"):
        resumed = two_phase_run(run)
    assert any(r.getMessage().startswith(f"resuming {run}: ") for r in caplog.records), caplog.text
    for got, want in zip(resumed, two_phase_run(tmp_path / "uninterrupted"), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("arch", ["mlp_small", "resnet_tiny"])
def test_catalog_models_split_into_features_and_head_every_time(arch):
    """The features end at the pooled vector (or the MLP's own output), and a second split works."""
    from zoo.training.features import head_split

    model = zoo.create_model(arch, num_classes=3, pretrained=False, input_shape=(8, 8))
    zoo.freeze(model)
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape).astype("float32"))
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    for _ in range(2):
        features, top = head_split(model)
        assert len(features.output.shape) == 2
        np.testing.assert_allclose(top(features(x)), model(x), rtol=1e-5, atol=1e-5)


def test_scaled_learning_rates_warm_up_for_the_batch_plans_epochs():
    from zoo.config import FinetuneConfig
    from zoo.distribute import batch_plan
    from zoo.training.loop import _Finetune

    # 8 replicas, linear scaling 8x: Goyal et al.'s warm-up over the plan's 3 epochs of 10 steps
    job = _Finetune.__new__(_Finetune)
    job.config = FinetuneConfig(lr_schedule="constant", warmup=0.0, learning_rate=0.1, lr_scaling="linear")
    job.batches = batch_plan(8, per_replica_batch_size=32, learning_rate=0.1, scale_rule="linear")
    assert job.batches.warmup_epochs == 3
    rate = job.learning_rate(plan("full", 5, 2, 4)[0], steps=10)
    assert [round(float(rate(step)), 6) for step in (0, 15, 30, 49)] == [0.0, 0.4, 0.8, 0.8]
    job.batches = batch_plan(1, batch_size=32, learning_rate=0.1)  # no scaling: no warm-up, a constant rate
    assert job.learning_rate(plan("full", 5, 2, 4)[0], steps=10) == pytest.approx(0.1)


def test_lr_find_uses_the_loss_of_a_softmax_model():
    from zoo.evaluation import from_logits

    x, y = arrays()
    inputs = keras.Input((16, 16, 3))
    bias = np.array([2.0, 0.0, 0.0])
    probs = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(bias))(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, probs)
    assert from_logits(model) is False and from_logits(tiny_model()) is True
    found = zoo.lr_find(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), start=1e-12, end=1e-11,
                        steps=4)
    # zero kernels: every image gets p = softmax(bias); the first batch's cross-entropy is the mean of -log p[y]
    p = np.exp(bias) / np.exp(bias).sum()
    expected = float(np.mean(-np.log(p[y[:8]])))
    read_as_logits = float(np.mean(-np.log((np.exp(p) / np.exp(p).sum())[y[:8]])))
    assert found.losses[0] == pytest.approx(expected, rel=1e-4) and abs(expected - read_as_logits) > 0.1


def test_tensorboard_logs_go_to_the_run_directory(tmp_path):
    zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=1, tensorboard=True, run_dir=tmp_path / "run",
                 verbose=0)
    assert any((tmp_path / "run" / "logs").rglob("events.out.tfevents*"))


def test_epochs_stream_is_lazy_and_a_resumed_stream_repeats_the_uninterrupted_order():
    from zoo.training.loop import epochs_stream

    examples = tf.data.Dataset.range(10)
    huge = epochs_stream(examples, 4, steps=3, first=0, last=10**9, seed=7)  # built lazily: no hang
    assert int(huge.cardinality()) == 3 * 10**9
    whole = [b.numpy().tolist() for b in epochs_stream(examples, 4, 3, 0, 4, seed=7)]
    resumed = [b.numpy().tolist() for b in epochs_stream(examples, 4, 3, 2, 4, seed=7)]
    assert resumed == whole[6:] and len(whole) == 12
    epochs = [sorted(sum(whole[i:i + 3], [])) for i in range(0, 12, 3)]
    assert all(epoch == list(range(10)) for epoch in epochs)  # every epoch sees every example once
    assert whole[0:3] != whole[3:6]  # and each epoch is shuffled anew


def test_the_command_lines_batch_size_trains_every_epoch(tmp_path):
    from zoo.config import RunConfig
    from zoo.jobs import run_finetune

    config = RunConfig(model="mlp_small", pretrained=False, data="digits", classes=[5, 6], per_class=5, recipe="full",
                       epochs=6, batch_size=8, patience=None, image_size=(8, 8), run_dir=str(tmp_path / "bs8"))
    run_finetune(config, verbose=0)
    with open(tmp_path / "bs8" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(r["loss"]) > 0 for r in rows)  # an epoch with no batch logs a loss of 0.0
    assert RunConfig.from_yaml(tmp_path / "bs8" / "config.yaml").batch_size == 8


def test_early_stopping_is_announced_and_keeps_the_best_weights(capsys):
    # no BatchNorm and a learning rate too small to move the loss: no epoch improves on the first, so
    # patience 1 stops after epoch 2
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Dense(8, name="hidden")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
    result = zoo.finetune(model, datasets(), recipe="full", epochs=5, learning_rate=1e-30, patience=1,
                          lr_schedule="constant", warmup=0.0, verbose=2)
    assert len(result.history) == 2 and result.history[0]["val_loss"] <= result.history[1]["val_loss"]
    assert "Epoch 2: early stopping" in capsys.readouterr().out


def test_callbacks_are_called_in_every_phase_after_the_checkpoint_is_written(tmp_path):
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(("phase", self.model.name))

        def on_epoch_end(self, epoch, logs=None):
            state = json.loads((tmp_path / "run" / "state.json").read_text())
            seen.append((epoch, len(state["history"])))

    zoo.finetune(tiny_model(), datasets(), recipe="two_phase", epochs=3, blocks=2, patience=None, verbose=0,
                 cache_features=True, run_dir=tmp_path / "run", callbacks=[Record()])
    assert seen == [("phase", "tiny_head"), (0, 1), ("phase", "tiny"), (0, 2), (1, 3)]  # epochs count per phase


def test_initial_epoch_goes_on_as_the_uninterrupted_run_would():
    # SGD without momentum keeps no state but the step count, which sets the cosine schedule: a run
    # stopped after 2 of 4 epochs and continued from epoch 2 trains as the whole run did
    class StopAfter(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            StopAfter.epochs += 1
            self.model.stop_training = StopAfter.epochs == 2

    options = {"recipe": "two_phase", "epochs": 4, "blocks": 2, "optimizer": "sgd", "learning_rate": 0.05,
               "patience": None, "precise_bn": False, "cache_features": True, "verbose": 0}
    train = datasets()[:1]  # no validation: the best weights are those of the lowest training loss
    whole = zoo.finetune(tiny_model(), train, **options)
    stopped = zoo.finetune(tiny_model(), train, callbacks=[StopAfter()], **options)
    assert [h["phase"] for h in whole.history] == ["head", "finetune", "finetune", "finetune"]
    assert len(stopped.history) == 2 and stopped.history[1]["loss"] < stopped.history[0]["loss"]
    rest = zoo.finetune(stopped.model, train, initial_epoch=2, **options)
    assert [(h["phase"], h["epoch"]) for h in rest.history] == [("finetune", 3), ("finetune", 4)]
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in whole.history[2:]], rel=1e-5)
    with pytest.raises(InvalidArgumentError, match=r"initial_epoch must be an integer in \[0, epochs=4\)"):
        zoo.finetune(tiny_model(), train, initial_epoch=4, **options)


@pytest.mark.parametrize("validate", [True, False])
def test_each_epoch_ends_with_precise_batchnorm_statistics_and_validates_with_them(validate):
    train, val = datasets()
    result = zoo.finetune(tiny_model(), (train, val) if validate else (train,), recipe="full", epochs=1,
                          patience=None, verbose=0)
    statistics = [w.numpy().copy() for w in result.model.non_trainable_weights]
    zoo.training.bn.recalibrate_batchnorm(result.model, train.unbatch().batch(8))
    for got, want in zip(result.model.non_trainable_weights, statistics):  # recalibrated at the epoch's end
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    if validate:
        result.model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        scores = result.model.evaluate(val, verbose=0, return_dict=True)
        assert result.history[0]["val_loss"] == pytest.approx(scores["loss"], rel=1e-5)
        assert result.history[0]["val_accuracy"] == pytest.approx(scores["accuracy"])


def test_precise_batchnorm_sets_moving_statistics_to_the_mean_of_the_batch_statistics():
    from zoo.training.bn import recalibrate_batchnorm

    keras.utils.set_random_seed(0)
    dense, bn, frozen = keras.layers.Dense(3), keras.layers.BatchNormalization(momentum=0.9), \
        keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((4,)), dense, bn, frozen])
    frozen.trainable = False
    rng = np.random.default_rng(0)
    for scale in (1.0, 5.0):  # twice: the second call reuses the traced pass, on other data
        x = (rng.normal(size=(20, 4)) * scale + scale).astype("float32")
        batches = tf.data.Dataset.from_tensor_slices((x, np.zeros(20))).batch(8)  # 8, 8 and 4
        assert recalibrate_batchnorm(model, batches) == 1
        h = [dense(x[i:i + 8]).numpy() for i in (0, 8, 16)]
        np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean(0) for b in h], 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var(0) for b in h], 0), rtol=1e-4)
        assert bn.momentum == 0.9 and np.array_equal(frozen.moving_mean.numpy(), np.zeros(3))


@pytest.mark.parametrize("setting, compiled", [("auto", False), (True, True)])
def test_xla_is_off_on_a_cpu_unless_asked_for(setting, compiled):
    assert not tf.config.list_logical_devices("GPU")  # this suite runs on CPUs
    result = zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=1, jit_compile=setting, verbose=0)
    assert result.model.jit_compile is compiled
