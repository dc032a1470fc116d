"""How alike two representations of the same examples are: centred kernel alignment (CKA, Kornblith, Norouzi, Lee
and Hinton 2019, "Similarity of Neural Network Representations Revisited"; the functions follow their
``representation_similarity/Demo.ipynb``), and minibatch CKA (Nguyen, Raghu and Kornblith 2021, "Do Wide and
Deep Networks Learn the Same Things?") for layer-by-layer maps over more examples than fit in one Gram matrix.

Features are numpy arrays of shape (examples, ...); everything after the first axis is flattened, and all the
arithmetic is float64.

Example:
    >>> cka(layer_a, layer_b)                              # linear CKA of two (N, D1), (N, D2) arrays
    0.83
    >>> cka_matrix([a1, a2, a3], [b1, b2], batch_size=256)  # (3, 2) map, minibatch CKA
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.errors import InvalidArgumentError

KERNELS = ("linear", "rbf")


def gram_linear(x: np.ndarray) -> np.ndarray:
    """The (N, N) Gram matrix of a linear kernel, ``K = X X^T``, over the N examples (rows) of ``x``.

    Example:
        >>> gram_linear(np.eye(3)).trace()
        3.0
    """
    x = _features(x, "x")
    return x @ x.T


def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """The (N, N) Gram matrix of an RBF kernel whose bandwidth is ``threshold`` times the median distance between
    examples (Kornblith et al. 2019, section 6.1): ``K_ij = exp(-||x_i - x_j||^2 / (2 threshold^2 median^2))``,
    the median taken over all N^2 squared distances (diagonal included), as the reference does.

    Example:
        >>> gram_rbf(np.random.rand(10, 4), threshold=0.5).shape
        (10, 10)
    """
    x = _features(x, "x")
    _check_threshold(threshold)
    dot_products = x @ x.T
    sq_norms = np.diag(dot_products)
    sq_distances = sq_norms[:, None] + sq_norms[None, :] - 2 * dot_products
    sq_median_distance = np.median(sq_distances)
    if not sq_median_distance > 0:
        raise InvalidArgumentError("the RBF kernel's bandwidth is zero: most examples have identical features; "
                                   "use kernel='linear' or more varied examples")
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """A symmetric Gram matrix centred, ``H K H`` with ``H = I - 11^T / N`` (the same as centring the kernel's
    features). ``unbiased=True`` gives instead the U-centred matrix of Szekely and Rizzo (2014) (zero diagonal),
    whose inner products divided by N(N-3) are the unbiased HSIC estimator of Song et al. (2012); it needs N >= 4.

    Example:
        >>> center_gram(gram_linear(x)).sum(axis=0)  # every column sums to zero
    """
    gram = np.array(gram, dtype=np.float64)  # a copy
    n = len(gram)
    if gram.ndim != 2 or gram.shape[1] != n:
        raise InvalidArgumentError(f"a Gram matrix must be square, got shape {gram.shape}")
    if not np.allclose(gram, gram.T):
        raise InvalidArgumentError("the Gram matrix is not symmetric: build it with gram_linear or gram_rbf")
    _check_examples(n, unbiased)
    if unbiased:
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka(x: np.ndarray, y: np.ndarray, *, kernel: str = "linear", threshold: float = 1.0,
        debiased: bool = False) -> float:
    """CKA between two representations of the same N examples, (N, D1) and (N, D2) (Kornblith et al. 2019, eq. 4):
    ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``; 1 for representations equal up to rotation and
    scale, near 0 for unrelated ones. ``kernel`` is "linear" or "rbf" (``threshold``: the bandwidth as a fraction
    of the median distance); ``debiased`` uses the unbiased HSIC estimator (needs N >= 4). Exact: it builds two
    N x N matrices, so for many examples use ``cka_matrix(..., batch_size=...)``. NaN if one side is constant.

    Example:
        >>> cka(features, features @ rotation)  # orthogonal ``rotation``
        1.0
    """
    _check_kernel(kernel, threshold)
    x, y = _pair(x, y)
    _check_examples(len(x), debiased)
    return float(_alignment(_centered(x, kernel, threshold, debiased), _centered(y, kernel, threshold, debiased)))


class MinibatchCKA:
    """Linear CKA between every layer of one set (rows) and of another (columns), accumulated over minibatches
    (Nguyen et al. 2021, eq. 3): ``CKA = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) mean_b
    HSIC_1(L_b, L_b))``, with ``HSIC_1`` the unbiased estimator of Song et al. (2012), so the result does not
    depend on the batch size in expectation. Each minibatch needs at least 4 examples.

    Example:
        >>> acc = MinibatchCKA(num_x_layers=3, num_y_layers=2)
        >>> for batch in batches:
        ...     acc.update([a1(batch), a2(batch), a3(batch)], [b1(batch), b2(batch)])
        >>> acc.result().shape
        (3, 2)
    """

    def __init__(self, num_x_layers: int, num_y_layers: int) -> None:
        for name, value in (("num_x_layers", num_x_layers), ("num_y_layers", num_y_layers)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        self.num_x_layers, self.num_y_layers = int(num_x_layers), int(num_y_layers)
        self._hsic_xy = np.zeros((self.num_x_layers, self.num_y_layers))
        self._hsic_xx = np.zeros(self.num_x_layers)
        self._hsic_yy = np.zeros(self.num_y_layers)
        self._batches = 0

    def update(self, xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> None:
        """Adds one minibatch: the features of the same examples at every x layer and every y layer.

        Example:
            >>> acc.update([a1(batch), a2(batch), a3(batch)], [b1(batch), b2(batch)])
        """
        xs, ys = _layers(xs, self.num_x_layers, "xs"), _layers(ys, self.num_y_layers, "ys")
        _same_examples(xs + ys, unbiased=True)
        # One row per layer: its U-centred Gram matrix flattened; inner products / (n(n-3)) are HSIC_1 (Song 2012).
        kx = np.stack([center_gram(gram_linear(x), unbiased=True).ravel() for x in xs])
        ky = np.stack([center_gram(gram_linear(y), unbiased=True).ravel() for y in ys])
        n = len(xs[0])
        self._hsic_xy += kx @ ky.T / (n * (n - 3))
        self._hsic_xx += np.einsum("ij,ij->i", kx, kx) / (n * (n - 3))
        self._hsic_yy += np.einsum("ij,ij->i", ky, ky) / (n * (n - 3))
        self._batches += 1

    def result(self) -> np.ndarray:
        """The (num_x_layers, num_y_layers) CKA map over the minibatches so far (NaN where a layer is constant).

        Example:
            >>> acc.result()[0, 0]
            0.97
        """
        if not self._batches:
            raise InvalidArgumentError("MinibatchCKA has seen no minibatch: call update() before result()")
        xy, xx, yy = (v / self._batches for v in (self._hsic_xy, self._hsic_xx, self._hsic_yy))
        with np.errstate(invalid="ignore", divide="ignore"):
            return xy / np.sqrt(np.outer(xx, yy))


def cka_matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], *, batch_size: int | None = None,
               kernel: str = "linear", threshold: float = 1.0, debiased: bool = False) -> np.ndarray:
    """CKA between every representation in ``xs`` (rows) and every one in ``ys`` (columns), all of the same N
    examples: exact (``batch_size=None``; ``kernel``, ``threshold`` and ``debiased`` as in ``cka``; it holds one
    N x N matrix per layer), or minibatch linear CKA over consecutive batches of ``batch_size`` examples (at least
    4; a last batch under 4 joins the one before it), which always uses the unbiased HSIC estimator.

    Example:
        >>> cka_matrix([a1, a2], [b1, b2, b3]).shape
        (2, 3)
        >>> cka_matrix([a1, a2], [b1, b2, b3], batch_size=256)
    """
    xs, ys = _layers(xs, None, "xs"), _layers(ys, None, "ys")
    if batch_size is None:
        _same_examples(xs + ys, unbiased=debiased)
        _check_kernel(kernel, threshold)
        kx = [_centered(x, kernel, threshold, debiased) for x in xs]
        ky = [_centered(y, kernel, threshold, debiased) for y in ys]
        return np.array([[_alignment(a, b) for b in ky] for a in kx]).reshape(len(xs), len(ys))
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 4:
        raise InvalidArgumentError(f"batch_size must be an integer >= 4 (the unbiased HSIC needs 4 examples), "
                                   f"got {batch_size!r}")
    if kernel != "linear":
        raise InvalidArgumentError(f"minibatch CKA uses the linear kernel only, got kernel={kernel!r}: pass "
                                   f"batch_size=None for an exact {kernel} CKA")
    n = _same_examples(xs + ys, unbiased=True)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 4:
        starts.pop()
    accumulator = MinibatchCKA(len(xs), len(ys))
    for start, stop in zip(starts, starts[1:] + [n]):
        accumulator.update([x[start:stop] for x in xs], [y[start:stop] for y in ys])
    return accumulator.result()


def _alignment(gram_x: np.ndarray, gram_y: np.ndarray) -> np.ndarray:
    """CKA of two centred Gram matrices: ``<K, L>_F / (||K||_F ||L||_F)``. HSIC's 1/(n-1)^2 (or 1/(n(n-3))
    for the unbiased estimator) cancels in the ratio."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.vdot(gram_x, gram_y) / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y))


def _centered(x: np.ndarray, kernel: str, threshold: float, debiased: bool) -> np.ndarray:
    _check_kernel(kernel, threshold)
    gram = gram_linear(x) if kernel == "linear" else gram_rbf(x, threshold)
    return center_gram(gram, unbiased=debiased)


def _features(x, name: str) -> np.ndarray:
    """``x`` as a float64 (N, features) array: every axis after the first flattened."""
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if x.ndim < 2:
        raise InvalidArgumentError(f"{name} must have shape (examples, features...), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values: check the model's outputs")
    return x.reshape(len(x), -1)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _features(x, "x"), _features(y, "y")
    if len(x) != len(y):
        raise InvalidArgumentError(f"x has {len(x)} examples but y has {len(y)}: CKA compares representations of "
                                   f"the same examples")
    return x, y


def _layers(arrays, expected: int | None, name: str) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        raise InvalidArgumentError(f"{name} must be a list of arrays, one per layer, got {type(arrays).__name__}")
    if not arrays:
        raise InvalidArgumentError(f"{name} is empty: give one array per layer")
    if expected is not None and len(arrays) != expected:
        raise InvalidArgumentError(f"{name} has {len(arrays)} arrays but this MinibatchCKA was made for "
                                   f"{expected} layers")
    return [_features(a, f"{name}[{i}]") for i, a in enumerate(arrays)]


def _same_examples(arrays: list[np.ndarray], unbiased: bool) -> int:
    sizes = sorted({len(a) for a in arrays})
    if len(sizes) > 1:
        raise InvalidArgumentError(f"the layers' arrays have different numbers of examples {sizes}: give every "
                                   f"layer the same examples")
    _check_examples(sizes[0], unbiased)
    return sizes[0]


def _check_examples(n: int, unbiased: bool) -> None:
    least = 4 if unbiased else 2
    if n < least:
        what = "the unbiased HSIC estimator (debiased CKA, minibatch CKA)" if unbiased else "CKA"
        raise InvalidArgumentError(f"{what} needs at least {least} examples, got {n}")


def _check_kernel(kernel: str, threshold: float) -> None:
    if kernel not in KERNELS:
        raise InvalidArgumentError(f"unknown kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    _check_threshold(threshold)


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or not threshold > 0:
        raise InvalidArgumentError(f"threshold must be a number > 0 (the RBF bandwidth as a fraction of the "
                                   f"median distance), got {threshold!r}")
