"""Memory release between repeated fine-tunes (a search's trials, a benchmark's runs) in one process.

Every ``fit`` traces ``tf.custom_gradient`` functions (Keras's TF optimizer all-reduces the gradients
through one), and TensorFlow keeps each in its global gradient registry for good, with the traced
graph and every weight of the model it captured (tensorflow issue 97697): a process that fine-tunes
model after model grows by each model's weights and optimizer state. ``released()`` drops what was
added inside its block.

Example:
    >>> from zoo.memory import released
    >>> for config in configs:
    ...     with released():
    ...         zoo.finetune(make_model(config), data, recipe="full")
"""
from __future__ import annotations

import contextlib
import contextvars
import gc
from collections.abc import Iterator

from zoo import compat

_DEPTH = contextvars.ContextVar("released_depth", default=0)  # released() blocks open around this point


@contextlib.contextmanager
def released() -> Iterator[None]:
    """On exit (error or not), drop the TF custom-gradient entries created inside the block, then ``gc.collect()``
    (only the outermost block collects: a collection walks TensorFlow's whole heap, about 0.3 s, which a search's
    trial would otherwise pay once per nested block).

    Entries from before the block, and from an enclosing ``released()`` block, are kept; models and
    compiled functions made inside keep working (their backward passes are already traced). Not for
    threads tracing at the same time: their entries made during the block are dropped too. Outside
    the TensorFlow versions ``zoo.compat`` was checked on, only ``gc.collect()`` runs.

    Example:
        >>> with released():
        ...     result = zoo.finetune(model, (train, val), recipe="full", epochs=1)
    """
    kept = compat.custom_gradient_names()
    token = _DEPTH.set(_DEPTH.get() + 1)
    try:
        yield
    finally:
        _DEPTH.reset(token)
        compat.drop_custom_gradients(keep=kept)
        if _DEPTH.get() == 0:
            gc.collect()
