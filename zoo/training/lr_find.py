"""The learning-rate range test (Smith 2015, fastai's ``lr_find``).

Train for a few steps while the learning rate grows exponentially, record the smoothed loss, stop
when it explodes, and suggest the rate where the loss falls fastest. The model's weights are put
back afterwards.

Example:
    >>> found = zoo.lr_find(model, train)
    >>> found.suggestion, found.plot("lr_find.png")
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from zoo import compat
from zoo.errors import InvalidArgumentError
from zoo.evaluation import loss_for
from zoo.training.optim import make_optimizer


@dataclass
class LRFinderResult:
    """Learning rates tried, their smoothed losses, and the suggested rate."""

    learning_rates: list[float]
    losses: list[float]
    suggestion: float

    def plot(self, path: str) -> str:
        """Save the loss against the learning rate (log scale) with the suggestion marked."""
        from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are

        from zoo.files import atomic_save

        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        ax.plot(self.learning_rates, self.losses)
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate range test")
        ax.legend()
        atomic_save(path, fig.savefig)
        return path


class _Sweep(keras.callbacks.Callback):
    def __init__(self, start, end, steps, beta=0.98):
        super().__init__()
        self.start, self.factor, self.steps, self.beta = start, (end / start) ** (1 / max(1, steps - 1)), steps, beta
        self.lrs, self.losses, self.avg, self.best = [], [], 0.0, math.inf

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_metrics()  # logs["loss"] is then this batch's loss, not the epoch's running mean
        self.model.optimizer.learning_rate.assign(self.start * self.factor ** len(self.lrs))

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smooth = self.avg / (1 - self.beta ** (len(self.lrs) + 1))
        self.lrs.append(float(self.model.optimizer.learning_rate.numpy()))
        self.losses.append(smooth)
        self.best = min(self.best, smooth)
        if not math.isfinite(loss) or smooth > 4 * self.best or len(self.lrs) >= self.steps:
            self.model.stop_training = True


def lr_find(model: keras.Model, data, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            optimizer: str = "adam", plot: str | None = None) -> LRFinderResult:
    """Run the range test on ``data`` (a batched dataset of ``(images, labels)``); weights are restored.

    The suggestion is the rate at the steepest fall of the smoothed loss.
    """
    if not 0 < start < end:
        raise InvalidArgumentError(f"lr_find needs 0 < start < end, got start={start}, end={end}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 3:
        raise InvalidArgumentError(f"lr_find needs steps >= 3 (it follows the loss over the steps), got {steps!r}")
    saved = model.get_weights()
    sweep = _Sweep(start, end, steps)
    model.compile(optimizer=make_optimizer(optimizer, start), loss=loss_for(model))
    model.optimizer.build(model.trainable_variables)  # before fit: one trace of the train step, not two
    compat.build_for_fit(model, data.element_spec)
    # one epoch of `steps` batches, the data repeated as needed: a small dataset is not dozens of short epochs
    model.fit(data.repeat(), epochs=1, steps_per_epoch=steps, callbacks=[sweep], shuffle=False, verbose=0)
    model.set_weights(saved)
    if len(sweep.losses) < 3:
        raise InvalidArgumentError("lr_find needs at least 3 batches: give more data or more steps")
    losses = np.array(sweep.losses)
    slopes = np.gradient(losses, np.log(sweep.lrs))
    end_at = len(losses) - 1 if losses[-1] <= 4 * losses.min() else len(losses) - 2
    result = LRFinderResult(sweep.lrs, sweep.losses, float(sweep.lrs[int(np.argmin(slopes[: end_at + 1]))]))
    if plot:
        result.plot(plot)
    return result
