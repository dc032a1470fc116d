"""The Keras callbacks a fine-tune runs its phases with (besides Keras's own TerminateOnNaN and TensorBoard).

- ``PreciseBatchNorm``: recompute trainable BatchNorm statistics at each epoch end, then validate again,
  so the epoch's figures (on screen, in history.csv, in the plots) are those of the weights kept.
- ``ResumableEarlyStopping``: Keras's EarlyStopping, whose count within a phase survives a resume.
- ``EpochEnd``: hands each finished epoch to the loop, which records it, keeps the run's best weights
  and writes the checkpoint.

Order matters: Keras passes one ``logs`` dict to each callback in turn, then to History and the progress
bar, so ``PreciseBatchNorm`` goes first.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import keras

from zoo.training.bn import recalibrate_batchnorm


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recalibrate trainable BatchNorm layers on ``data`` at each epoch end; re-validate on ``validation``."""

    def __init__(self, data, validation=None):
        super().__init__()
        self.data, self.validation = data, validation

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not math.isfinite(logs.get("loss", 0.0)):
            return
        if recalibrate_batchnorm(self.model, self.data) and self.validation is not None:
            # the epoch's validation ran on stale moving statistics
            scores = self.model.evaluate(self.validation, verbose=0, return_dict=True)
            logs.update({f"val_{k}": float(v) for k, v in scores.items()})


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` that starts from a saved ``wait`` and ``best`` (a resumed phase)."""

    def __init__(self, *, wait: int = 0, best: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.resume_wait, self.resume_best = wait, best

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, self.best = self.resume_wait, self.resume_best


class EpochEnd(keras.callbacks.Callback):
    """Call ``end_epoch(logs)`` after every finished epoch whose loss is finite; remember a diverged one."""

    def __init__(self, end_epoch: Callable[[dict], None]):
        super().__init__()
        self.end_epoch, self.diverged = end_epoch, False

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not math.isfinite(logs.get("loss", 0.0)):
            self.diverged = True  # Keras's TerminateOnNaN has stopped the epoch; nothing of it is kept
            return
        self.end_epoch(logs)
