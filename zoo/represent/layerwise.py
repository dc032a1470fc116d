"""Layer-wise analyses, every stage at once: where in a network a task becomes easy (kNN and linear-probe
accuracy of each stage's pooled features and of the final embedding, fitted on one split and scored on
another), and how two networks' layers relate (a CKA map, stage against stage).

Example:
    >>> rows = probe_layers(model, "digits", data_options={"classes": [5, 6, 7, 8, 9]})
    >>> print(probe_table({"pretrained": rows}))
    >>> matrix, rows, columns = compare_layers(model, other, images)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from zoo.errors import InvalidArgumentError
from zoo.represent.features import head_input, pooled, stages_of, tap
from zoo.represent.probes import knn_accuracy, linear_probe

EMBEDDING = "embedding"  # the row of the features the classifier head reads


@dataclass(frozen=True)
class LayerScore:
    """Probe accuracies of one layer's pooled features."""

    layer: str
    width: int
    knn: float
    linear: float


def pooled_layers(model: keras.Model, stages: Sequence[str] | None = None, pool: str = "avg") -> keras.Model:
    """A model from ``model``'s inputs to a dict of pooled features: each stage's (averaged over space or
    tokens; ``pool="token"``: a transformer's class token), then ``"embedding"``, what the head reads."""
    chosen = stages_of(model, stages)
    top = head_input(model)
    tapped = tap(model, list(chosen.values()) + ([top] if top else []))
    outputs = tapped.outputs[:-1] if top else tapped.outputs  # the head's input, else the model's own output
    return keras.Model(tapped.inputs, {key: pooled(out, pool) for key, out in zip([*chosen, EMBEDDING], outputs)})


def layer_features(model: keras.Model, dataset, **kwargs) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The pooled features of every stage of ``model`` on a batched ``(images, labels)`` dataset, in one
    compiled pass, and the labels."""
    extractor = pooled_layers(model, **kwargs)
    chunks, labels = {}, []
    for images, y in dataset:
        for key, value in extractor.predict_on_batch(images).items():
            chunks.setdefault(key, []).append(np.asarray(value))
        labels.append(np.asarray(y))
    return {k: np.concatenate(v) for k, v in chunks.items()}, np.concatenate(labels).astype("int64")


def probe_layers(model: keras.Model, data, *, stages: Sequence[str] | None = None, data_options: dict | None = None,
                 k: int = 20, fit_split: str = "train", score_split: str = "test", batch_size: int = 64,
                 pool: str = "avg") -> list[LayerScore]:
    """kNN (DINO's, ``k`` neighbours) and linear-probe accuracy of every stage's pooled features of ``model``:
    fitted on ``fit_split`` of ``data`` (anything ``zoo.data.load`` takes) and scored on ``score_split``.
    ``k`` is capped at the number of fitting examples.

    Example:
        >>> [(r.layer, round(r.knn, 3)) for r in probe_layers(model, "digits")]
        [('1', 0.61), ('2', 0.83), ('4', 0.94), ('embedding', 0.94)]
    """
    from zoo.data import load
    from zoo.represent.features import SPLITS

    for split in (fit_split, score_split):
        if split not in SPLITS:
            raise InvalidArgumentError(f"unknown split {split!r}: use one of train, val, test")
    splits = load(data, model=model, batch_size=batch_size, shuffle=False, **(data_options or {}))
    fit, fit_y = layer_features(model, splits[SPLITS[fit_split]], stages=stages, pool=pool)
    score, score_y = layer_features(model, splits[SPLITS[score_split]], stages=stages, pool=pool)
    return [LayerScore(key, fit[key].shape[1],
                       knn_accuracy(fit[key], fit_y, score[key], score_y, k=min(k, len(fit_y))),
                       linear_probe(fit[key], fit_y, score[key], score_y).accuracy)
            for key in fit]


def probe_table(results: dict[str, list[LayerScore]]) -> str:
    """The probes of one or more models (e.g. pretrained and random init) side by side, one row per layer."""
    from zoo.text import table

    names = list(results)
    layers = [row.layer for row in results[names[0]]]
    rows = []
    for i, layer in enumerate(layers):
        row = [layer, results[names[0]][i].width]
        for name in names:
            row += [results[name][i].knn, results[name][i].linear]
        rows.append(row)
    headers = ["layer", "width"] + [f"{what} {name}" for name in names for what in ("kNN", "linear")]
    return table(rows, headers)


def compare_layers(first: keras.Model, second: keras.Model, dataset, *, stages: Sequence[str] | None = None,
                   other_stages: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Minibatch linear CKA (Nguyen et al. 2021) between every stage of ``first`` (rows) and of ``second``
    (columns) over a batched ``(images, labels)`` dataset; each stage's output is flattened, and batches of
    fewer than 4 examples are left out (the unbiased HSIC needs 4).

    Example:
        >>> matrix, rows, columns = compare_layers(model, random_twin, test)
    """
    from zoo.represent.similarity import MinibatchCKA

    sides = []
    for model, chosen in ((first, stages), (second, other_stages)):
        named = stages_of(model, chosen)
        tapped = tap(model, list(named.values()))
        sides.append((list(named), keras.Model(tapped.inputs, tapped.outputs[:-1])))
    (rows, a), (columns, b) = sides
    accumulator, seen = MinibatchCKA(len(rows), len(columns)), 0
    for images, _ in dataset:
        if len(images) < 4:
            continue
        xs, ys = (
            [np.asarray(v).reshape(len(images), -1) for v in _as_list(m.predict_on_batch(images))] for m in (a, b)
        )
        accumulator.update(xs, ys)
        seen += len(images)
    if not seen:
        raise InvalidArgumentError("CKA needs batches of at least 4 examples: give more data or a larger batch")
    return accumulator.result(), rows, columns


def _as_list(values) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]
