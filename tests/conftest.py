import contextlib
import gc
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_ZOO_OFFLINE", "1")  # tests never touch the network

# The largest files, whose tests share no module-scoped fixture: pytest-xdist hands out their tests one by
# one, so that no worker is left with a long file at the end. Every other file runs whole on one
# worker (its module-scoped fixtures, such as the CLI's main job, are then built once).
SPLIT_PER_TEST = {"test_architectures.py", "test_examples.py", "test_factory.py", "test_finetune.py",
                  "test_hub.py", "test_tuning.py"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name not in SPLIT_PER_TEST:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    # pytest-xdist hands out the files' groups first (most tests first), then the single tests in this order:
    # the slow ones before the rest, so that the last minute is short tests on every worker, not one long one
    items.sort(key=lambda item: item.path.name in SPLIT_PER_TEST and item.get_closest_marker("slow") is None)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """The test modules have imported TensorFlow, Keras and the package: about 390,000 objects that live as long
    as the process. Frozen out of the collector's sight, they are not walked again by each ``gc.collect()`` (every
    ``zoo.finetune`` runs one, in ``zoo.memory.released``): 0.2 s a collection becomes 0.015 s, and a fine-tune of
    ``tiny_model`` 1.35 s becomes 1.15 s. What the tests make is still collected."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def shapes_only():
    """Models built in this block get their variables' shapes but never their values (Keras's StatelessScope,
    told not to initialise them on leaving: a third of the time for the largest catalog entries). Check shapes
    and parameter counts inside the block; Keras then forgets the uninitialised variables (clear_session)."""
    import keras

    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        keras.backend.clear_session(free_memory=False)


# Shared by the fine-tuning and fault tests; TensorFlow is imported only when they are called.
def tiny_model(num_classes=3, name="tiny"):
    """A small non-catalog CNN with BatchNorm: groups fall back to equal parameter counts."""
    import keras

    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((16, 16, 3))
    for i, width in enumerate([8, 16, 16, 32]):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="head")(x), name=name)


def arrays(n=48, size=16, classes=3, seed=0):
    """Images with a learnable signal in the red channel, and their labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    x[..., 0] += y[:, None, None] * 40.0  # a learnable signal
    return x, y


def datasets(n=48, size=16, classes=3, shuffle=False):
    """Batched, unshuffled (train, validation) datasets of ``arrays``."""
    import tensorflow as tf

    x, y = arrays(n, size, classes)
    train = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        train = train.shuffle(n, seed=1)
    val = tf.data.Dataset.from_tensor_slices(arrays(24, size, classes, seed=1)).batch(8)
    return train.batch(8), val
