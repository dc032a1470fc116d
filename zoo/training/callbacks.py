"""The Keras callbacks a fine-tune runs its phases with (besides Keras's own TerminateOnNaN and TensorBoard).

- ``PreciseBatchNorm``: recompute trainable BatchNorm statistics once an epoch, before its validation, so
  the epoch's figures (on screen, in history.csv, in the plots) are those of the weights kept.
- ``ResumableEarlyStopping``: Keras's EarlyStopping, whose count within a phase survives a resume.
- ``EpochEnd``: hands each finished epoch to the loop, which records it, keeps the run's best weights
  and writes the checkpoint.

Order matters: Keras calls the callbacks in turn, so ``PreciseBatchNorm`` goes first (the statistics are
set before any other callback sees the epoch).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import keras

from zoo.training.bn import recalibrate_batchnorm


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recalibrate trainable BatchNorm layers on ``data`` once an epoch: before the epoch's validation, which
    then measures the statistics the epoch ends with (``fit`` calls ``on_test_begin`` there), or at the epoch's
    end where there is none. Not after a non-finite loss."""

    def __init__(self, data):
        super().__init__()
        self.data, self.pending = data, False

    def on_epoch_begin(self, epoch, logs=None):
        self.pending = True

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and not math.isfinite(logs.get("loss", 0.0)):
            self.pending = False  # the weights are NaN: nothing to recalibrate

    def on_test_begin(self, logs=None):
        self._recalibrate()

    def on_epoch_end(self, epoch, logs=None):
        self._recalibrate()

    def _recalibrate(self) -> None:
        if self.pending:
            recalibrate_batchnorm(self.model, self.data)
        self.pending = False


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` that starts from a saved ``wait`` and ``best`` (a resumed phase)."""

    def __init__(self, *, wait: int = 0, best: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.resume_wait, self.resume_best = wait, best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, self.best = self.resume_wait, self.resume_best


class EpochEnd(keras.callbacks.Callback):
    """Call ``end_epoch(logs)`` after every finished epoch whose losses are finite; remember a diverged one.

    A finite training loss with a non-finite validation loss has diverged too: the weights or the BatchNorm
    statistics overflowed during the epoch, and what the model predicts is no longer a number.
    """

    def __init__(self, end_epoch: Callable[[dict], None]):
        super().__init__()
        self.end_epoch, self.diverged = end_epoch, False

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not all(math.isfinite(logs.get(key, 0.0)) for key in ("loss", "val_loss")):
            self.diverged = True  # nothing of the epoch is kept
            self.model.stop_training = True  # TerminateOnNaN stops on the training loss only
            return
        self.end_epoch(logs)
