"""How much a representation knows about labels, without training the network: DINO's weighted k-nearest-neighbour
classifier and a linear probe (scikit-learn logistic regression). Both take numpy features, one row per example.

Example:
    >>> knn_accuracy(train_x, train_y, test_x, test_y, k=20)
    0.912
    >>> linear_probe(train_x, train_y, test_x, test_y)
    ProbeResult(accuracy=0.94, C=0.1, val_accuracy=0.93)
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zoo.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))  # 1e-4 ... 1e2, the grid the linear probe searches
_SIMILARITIES_PER_CHUNK = 1 << 22  # test rows x training rows computed at once: 32 MiB in float64


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, k: int = 20, temperature: float = 0.07,
                 num_classes: int | None = None) -> float:
    """Top-1 accuracy of DINO's weighted kNN classifier (Caron et al. 2021, ``eval_knn.py``, after Wu et al. 2018):
    features are L2-normalised, each test example's ``k`` most cosine-similar training examples vote for their
    label with weight ``exp(similarity / temperature)``, and the class with the largest summed vote wins (ties:
    the smallest label). Labels may be any sortable values; ``num_classes``, if given, checks they are integers
    in ``[0, num_classes)``.

    Example:
        >>> knn_accuracy(train_x, train_y, test_x, test_y, k=20, temperature=0.07)
        0.912
    """
    train_x, train_y, test_x, test_y = _checked(train_features, train_labels, test_features, test_labels)
    n_train = len(train_y)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_train:
        raise InvalidArgumentError(f"k must be an integer from 1 to the size of the training set ({n_train} "
                                   f"examples), got {k!r}: pass a smaller k or more training examples")
    if not temperature > 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature!r}: DINO uses 0.07")
    if num_classes is not None:
        _check_label_range(num_classes, train_y, test_y)

    classes, codes = np.unique(np.concatenate([train_y, test_y]), return_inverse=True)
    train_codes, test_codes = codes[:n_train], codes[n_train:]
    train_x, test_x = _l2_normalised(train_x), _l2_normalised(test_x)

    chunk = max(1, _SIMILARITIES_PER_CHUNK // n_train)
    correct = 0
    for start in range(0, len(test_x), chunk):
        similarity = test_x[start:start + chunk] @ train_x.T  # cosine similarity, (chunk, n_train)
        rows = np.arange(len(similarity))[:, None]
        neighbours = np.argpartition(similarity, n_train - k, axis=1)[:, n_train - k:]  # the k most similar
        weights = np.exp(similarity[rows, neighbours] / temperature)
        # votes[i, c] = sum of the weights of test example i's neighbours of class c
        cells = (rows * len(classes) + train_codes[neighbours]).ravel()
        votes = np.bincount(cells, weights.ravel(), minlength=len(rows) * len(classes)).reshape(len(rows), -1)
        correct += int(np.sum(votes.argmax(axis=1) == test_codes[start:start + chunk]))
    return correct / len(test_x)


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe's test accuracy, the inverse regularisation strength it used, and that C's accuracy on the
    validation split it was chosen on (None when there were too few examples to hold any out)."""

    accuracy: float
    C: float
    val_accuracy: float | None = None


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, val_fraction: float = 0.2, Cs: Sequence[float] = DEFAULT_CS,
                 seed: int = 0) -> ProbeResult:
    """Test accuracy of a logistic regression on standardised features: its C is the one of ``Cs`` that scores
    best on ``val_fraction`` of the training features held out (stratified when every class has 2 examples or
    more; on a tie, the C nearest 1), then it is refitted on all the training features with that C. With too
    few examples to hold any out (e.g. one per class), it uses the C of ``Cs`` nearest to 1 and logs so.

    Example:
        >>> result = linear_probe(train_x, train_y, test_x, test_y, Cs=[0.01, 0.1, 1.0])
        >>> result.accuracy, result.C
        (0.94, 0.1)
    """
    from sklearn.model_selection import train_test_split

    train_x, train_y, test_x, test_y = _checked(train_features, train_labels, test_features, test_labels)
    Cs = _positive_numbers(Cs)
    if not 0 < val_fraction < 1:
        raise InvalidArgumentError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    classes, counts = np.unique(train_y, return_counts=True)
    if len(classes) < 2:
        raise InvalidArgumentError(f"the linear probe needs training examples of at least 2 classes, got only "
                                   f"{classes.tolist()}: give it examples of more classes")

    n, n_classes = len(train_y), len(classes)
    n_val = int(np.ceil(val_fraction * n))  # as train_test_split counts a fractional test_size
    split = None
    if counts.min() >= 2 and n_classes <= n_val <= n - n_classes:
        split = train_test_split(train_x, train_y, test_size=n_val, stratify=train_y, random_state=seed)
    elif n > n_classes and 1 <= n_val <= n - 2:
        split = train_test_split(train_x, train_y, test_size=n_val, random_state=seed)
        if len(np.unique(split[2])) < 2:
            split = None

    val_accuracy = None
    if len(Cs) == 1:
        C = Cs[0]
    elif split is None:
        C = min(Cs, key=lambda c: abs(np.log(c)))
        logger.info("linear probe: %d training examples of %d classes are too few to hold out a validation "
                    "split, so C is not tuned: using C=%g", n, n_classes, C)
    else:
        fit_x, val_x, fit_y, val_y = split
        scores = [_probe(c).fit(fit_x, fit_y).score(val_x, val_y) for c in Cs]
        # on a tie (frequent with few held-out examples) the C nearest scikit-learn's default, 1
        best = max(range(len(Cs)), key=lambda i: (scores[i], -abs(np.log(Cs[i]))))
        C, val_accuracy = Cs[best], float(scores[best])
        logger.debug("linear probe: C=%g chosen on %d held-out examples (validation accuracy %.4f)",
                    C, len(val_y), val_accuracy)
    accuracy = float(_probe(C).fit(train_x, train_y).score(test_x, test_y))
    return ProbeResult(accuracy=accuracy, C=C, val_accuracy=val_accuracy)


def _positive_numbers(Cs) -> list[float]:
    try:
        values = [float(c) for c in np.asarray(Cs, dtype=float).ravel()]
    except (TypeError, ValueError):
        values = []
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise InvalidArgumentError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
    return values


def _probe(C: float):
    """Standardised features into a multinomial logistic regression (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=10_000))


def _checked(train_features, train_labels, test_features, test_labels) -> tuple[np.ndarray, ...]:
    """The four inputs as arrays (floating features), or an InvalidArgumentError saying which one is wrong."""
    out = []
    for split, features, labels in (("train", train_features, train_labels), ("test", test_features, test_labels)):
        x, y = np.asarray(features), np.asarray(labels)
        if x.ndim != 2:
            raise InvalidArgumentError(f"{split}_features must be 2-D (examples, features), got shape {x.shape}: "
                                       f"pool or flatten each example's features first")
        if y.ndim != 1:
            raise InvalidArgumentError(f"{split}_labels must be 1-D (one label per example), got shape {y.shape}")
        if len(x) != len(y):
            raise InvalidArgumentError(f"{split}_features has {len(x)} rows but {split}_labels has {len(y)} "
                                       f"labels: give one label per example")
        if len(x) == 0:
            raise InvalidArgumentError(f"the {split} set is empty: give it at least one example")
        if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise InvalidArgumentError(f"{split}_features must be real numbers, got dtype {x.dtype}")
        x = x.astype(np.result_type(x.dtype, np.float32), copy=False)  # float32 stays float32, ints become float64
        if not np.all(np.isfinite(x)):
            raise InvalidArgumentError(f"{split}_features contain NaN or infinite values: check the model's outputs")
        out += [x, y]
    if out[0].shape[1] != out[2].shape[1]:
        raise InvalidArgumentError(f"train_features have {out[0].shape[1]} features per example but test_features "
                                   f"have {out[2].shape[1]}: take both from the same layer")
    return out[0], out[1], out[2], out[3]


def _check_label_range(num_classes, train_y: np.ndarray, test_y: np.ndarray) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise InvalidArgumentError(f"num_classes must be a positive integer, got {num_classes!r}")
    for split, y in (("train", train_y), ("test", test_y)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
            raise InvalidArgumentError(f"{split}_labels must be integers from 0 to {num_classes - 1} "
                                       f"(num_classes={num_classes}): pass the right num_classes or None")


def _l2_normalised(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (as torch.nn.functional.normalize: an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
