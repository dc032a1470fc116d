"""Mixup and CutMix: training batches whose images and labels are mixed pairwise (timm's ``--mixup 0.8
--cutmix 1.0``), with Keras's own ``MixUp`` and ``CutMix`` layers.

Labels become soft (one row of class weights per image), so a fine-tune with mixing trains with
``zoo.evaluation.loss_for(..., soft_labels=True)``, which takes soft training labels and integer validation
labels alike. "mixup_cutmix" picks one of the two for each batch, as timm does (``switch_prob`` 0.5).

Example:
    >>> mixed = mix_batches(train_batches, "mixup", num_classes=10, seed=0)
"""
from __future__ import annotations

import keras
import tensorflow as tf

from zoo.config import MIXES
from zoo.errors import InvalidArgumentError

MIXUP_ALPHA, CUTMIX_ALPHA = 0.8, 1.0  # timm's defaults: mixing weights ~ Beta(alpha, alpha)


def mix_batches(batches: tf.data.Dataset, kind: str, num_classes: int, seed: int = 0) -> tf.data.Dataset:
    """``batches`` of ``(images, integer labels)`` as ``(mixed images, soft labels)``; "none" leaves them."""
    if kind not in MIXES:
        raise InvalidArgumentError(f"mix={kind!r} is not a preset: use one of {', '.join(MIXES)}")
    if kind == "none":
        return batches
    layers = {"mixup": keras.layers.MixUp(alpha=MIXUP_ALPHA, seed=seed),
              "cutmix": keras.layers.CutMix(factor=CUTMIX_ALPHA, seed=seed + 1)}
    chosen = list(layers) if kind == "mixup_cutmix" else [kind]
    coin = keras.random.SeedGenerator(seed + 2)

    def mix(images, labels):
        data = {"images": tf.cast(images, tf.float32),
                "labels": tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)}
        if len(chosen) == 1:
            out = layers[chosen[0]](data, training=True)
        else:
            out = tf.cond(keras.random.uniform((), seed=coin) < 0.5, lambda: layers["mixup"](data, training=True),
                          lambda: layers["cutmix"](data, training=True))
        return out["images"], out["labels"]

    # one batch at a time: the layers' random state then advances in a fixed order, so seeded runs repeat
    return batches.map(mix)
