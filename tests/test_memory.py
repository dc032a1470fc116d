"""Memory between repeated fine-tunes: zoo.memory.released() drops what TensorFlow would keep for good.

Each graph-mode ``tf.custom_gradient`` call leaves an entry in TF's gradient registry that keeps its
traced graph, and the model weights it captured, alive (tensorflow issue 97697); Keras's TF optimizer
makes two per ``fit``. Measured on 2 CPU cores (Keras 3.15.1, TF 2.21.0) with ``tiny_model`` below,
RSS after each of 10 fine-tunes, growth from the 3rd reading to the 10th (7 fine-tunes):
    without released() (``python tests/test_memory.py --without``): +80 MiB (+79.6, +80.3), i.e.
        about 18 MiB a fine-tune, less one ~24 MiB step down as malloc returns memory
    with released() (zoo.finetune's own): +3.6, +4.1, +4.4 MiB (the first 3 readings climb ~17 MiB each)
so a 40 MiB bound is ~10x the growth with it and half the leak without it.
"""
import contextlib
import gc
import uuid
import weakref

import keras
import numpy as np
import psutil
import tensorflow as tf

import zoo
from zoo import compat
from zoo.memory import released

WARMUP, MEASURED = 3, 7  # fine-tunes up to the first reading (traces, caches, allocator), then after it
GROWTH_BOUND_MIB = 40.0


def tiny_model():
    """~300k weights behind a small conv: a leaked model (weights, Adam slots, graphs) shows in RSS."""
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(4096, activation="relu")(x)
    x = keras.layers.Dense(64)(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def datasets():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = np.arange(32) % 3
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(8)
    return train, val


def rss_over_finetunes(calls: int) -> list[float]:
    """RSS in MiB after each of ``calls`` fine-tunes of a new tiny model (zoo.finetune runs in released())."""
    process, data, readings = psutil.Process(), datasets(), []
    for _ in range(calls):
        result = zoo.finetune(tiny_model(), data, recipe="full", epochs=1, verbose=0)
        readings.append(process.memory_info().rss / 2**20)
    assert result.model.predict(data[1], verbose=0).shape == (16, 3)  # a model trained inside still works
    return readings


def test_rss_stays_flat_over_ten_finetunes():
    # zoo.finetune runs its body in released() (zoo/training/loop.py), so this checks finetune itself
    readings = rss_over_finetunes(WARMUP + MEASURED)
    growth = readings[-1] - readings[WARMUP - 1]
    print(f"RSS over {len(readings)} fine-tunes (MiB): {[round(r) for r in readings]}; growth {growth:+.1f}")
    assert growth < GROWTH_BOUND_MIB, f"RSS grew {growth:.0f} MiB over {MEASURED} fine-tunes: {readings}"


def _custom_gradient_function():
    """A new tf.function around a tf.custom_gradient: each trace registers one CustomGradient-N."""

    @tf.custom_gradient
    def double(x):
        return 2 * x, lambda dy: 2 * dy

    @tf.function
    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(double(x))
        return tape.gradient(y, x)

    return f


def _trace() -> set[str]:
    """Trace one custom gradient; return the registry names it added."""
    before = compat.custom_gradient_names()
    f = _custom_gradient_function()
    assert f(tf.ones([2])).numpy().tolist() == [2.0, 2.0]
    added = compat.custom_gradient_names() - before
    assert len(added) == 1
    return added


def test_released_drops_only_the_custom_gradients_made_inside_it():
    outside = _trace()
    op_name = f"ZooTestGradient{uuid.uuid4().hex}"
    with released():
        outer = _trace()
        tf.RegisterGradient(op_name)(lambda op, grad: grad)  # not a custom gradient: never dropped
        with released():
            inner = _trace()
        names = compat.custom_gradient_names()
        assert outer <= names and not inner & names  # the inner block dropped only its own
    names = compat.custom_gradient_names()
    assert outside <= names and not (outer | inner) & names
    assert op_name in compat.gradient_registry()
    compat.drop_custom_gradients(keep=names - outside)  # leave the process as it was


def test_released_releases_on_an_error_too():
    try:
        with released():
            made = _trace()
            raise KeyError("boom")
    except KeyError:
        pass
    assert not made & compat.custom_gradient_names()


def test_outside_the_checked_tensorflow_released_only_collects(monkeypatch):
    f = _custom_gradient_function()
    before = compat.custom_gradient_names()
    monkeypatch.setattr(compat, "TF_OK", False)
    assert compat.gradient_registry() == {} and compat.custom_gradient_names() == set()
    with released():
        f(tf.ones([2]))
    monkeypatch.setattr(compat, "TF_OK", True)
    made = compat.custom_gradient_names() - before
    assert len(made) == 1  # the private registry was left alone
    compat.drop_custom_gradients(keep=compat.custom_gradient_names() - made)


def test_released_collects_once_at_the_end_of_the_outermost_block():
    class Cycle:
        pass

    def cycle():
        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # only the cycle collector frees these
        return weakref.ref(a)

    gc.disable()  # no automatic collection: what is freed, released() freed
    try:
        before = cycle()
        with released():
            with released():
                inner = cycle()
            assert inner() is not None  # the inner block leaves the collection to the outermost one
            outer = cycle()
        assert inner() is None and outer() is None and before() is None
    finally:
        gc.enable()


if __name__ == "__main__":  # the figures in the module docstring: python tests/test_memory.py [--without]
    import sys

    import zoo.memory

    if "--without" in sys.argv:  # zoo.finetune's own released() off too
        zoo.memory.released = contextlib.nullcontext
    readings = rss_over_finetunes(WARMUP + MEASURED)
    print([round(r, 1) for r in readings], f"growth: {readings[-1] - readings[WARMUP - 1]:+.1f} MiB")
