"""Fine-tuning options for big backbones: label smoothing, mixup and CutMix, gradient accumulation and a
moving average of the weights, each checked against its definition."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.evaluation import CrossEntropy, evaluate
from zoo.training.mixing import mix_batches


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_label_smoothing_is_the_cross_entropy_with_the_smoothed_target():
    logits = np.array([[0.5, 1.0, 3.0], [2.0, -1.0, 0.0]], "float32")
    labels = np.array([2, 0])
    target = 0.9 * np.eye(3)[labels] + 0.1 / 3  # Szegedy et al. 2016: (1 - s) one-hot + s / K
    want = -(target * log_softmax(logits)).sum(axis=-1).mean()
    assert float(CrossEntropy(label_smoothing=0.1)(labels, logits)) == pytest.approx(want, rel=1e-5)
    # soft labels (mixed batches) go in as they are; without smoothing integers give Keras's sparse loss
    soft = np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]], "float32")
    assert float(CrossEntropy()(soft, logits)) == pytest.approx(-(soft * log_softmax(logits)).sum(-1).mean(), 1e-5)
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(CrossEntropy()(labels, logits)) == pytest.approx(float(sparse), rel=1e-6)


def constant_images(n=32, classes=8, size=32):
    """Images of one value each, 10 times their class: a mixed image's mean is then its labels' weights
    times those values, for mixup and CutMix alike."""
    labels = np.arange(n) % classes
    images = np.broadcast_to((10.0 * labels)[:, None, None, None], (n, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8), 10.0 * np.arange(classes)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_batches_carry_labels_weighted_as_their_pixels(kind):
    batches, values = constant_images()
    for images, labels in mix_batches(batches, kind, num_classes=8, seed=1):
        images, labels = images.numpy(), labels.numpy()
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert (labels.max(axis=1) < 1.0).any()  # something was mixed
        # CutMix weighs labels by its box's area; the box's edges fall between pixels (one row and column)
        tolerance = 1e-3 if kind == "mixup" else values.max() * (2 * 32 + 1) / 32**2
        np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), labels @ values, atol=tolerance)


def test_mixup_cutmix_uses_both():
    batches, _ = constant_images(n=160)
    pasted = [bool((images.numpy().std(axis=(1, 2, 3)) > 1e-3).any())  # CutMix leaves two values in an image
              for images, _ in mix_batches(batches, "mixup_cutmix", num_classes=8, seed=0)]
    assert any(pasted) and not all(pasted)


def tiny_task(n=16):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (n, 4, 4, 3)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype("int64") + 2 * (x[:, 0, 0, 0] > 0.5)
    return tf.data.Dataset.from_tensor_slices((x, y))


def linear_model():
    inputs = keras.Input((4, 4, 3))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(hidden))


PLAIN = dict(recipe="full", epochs=1, optimizer="sgd", learning_rate=0.1, lr_schedule="constant", warmup=0.0,
             shuffle=False, precise_bn=False, patience=None, cache_features=False, verbose=0)


def finetune_from(weights, batch_size, **options):
    model = linear_model()
    model.set_weights(weights)
    data = tiny_task()
    return zoo.finetune(model, (data.batch(batch_size), data.batch(8)), batch_size=batch_size, **PLAIN, **options)


def test_gradient_accumulation_updates_as_the_larger_batch_does():
    start = linear_model().get_weights()
    whole = finetune_from(start, 8).model.get_weights()
    accumulated = finetune_from(start, 4, grad_accum=2).model.get_weights()
    stepwise = finetune_from(start, 4).model.get_weights()
    for a, b in zip(whole, accumulated):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(whole, stepwise))  # four updates differ


class Trajectory(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([w.numpy().copy() for w in self.model.trainable_weights])


def test_ema_keeps_the_moving_average_and_validates_with_it():
    model, seen = linear_model(), Trajectory()
    data = tiny_task()
    result = zoo.finetune(model, (data.batch(2), data.batch(8)), batch_size=2, ema=0.6, callbacks=[seen],
                          **PLAIN)
    average = seen.weights[0]  # Polyak averaging from the first update: a = 0.6 a + 0.4 w after each one
    for weights in seen.weights[1:]:
        average = [0.6 * a + 0.4 * w for a, w in zip(average, weights)]
    for want, got in zip(average, result.model.trainable_weights):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert not np.allclose(seen.weights[-1][0], average[0], atol=1e-4)  # the average is not the last step
    assert result.history[-1]["val_loss"] == pytest.approx(evaluate(result.model, data.batch(8)).loss, rel=1e-5)


def test_mix_and_label_smoothing_train_through_finetune():
    model = linear_model()
    before = [w.copy() for w in model.get_weights()]
    data = tiny_task()
    result = zoo.finetune(model, (data.batch(4), data.batch(8)), batch_size=4, mix="mixup", label_smoothing=0.1,
                          **PLAIN)
    assert np.isfinite(result.history[-1]["loss"]) and 0 <= result.history[-1]["val_accuracy"] <= 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, result.model.get_weights()))
    with pytest.raises(zoo.ZooError, match="cache_features=true .* mix=cutmix"):
        zoo.finetune(model, (data.batch(4),), mix="cutmix", cache_features=True, epochs=1)
