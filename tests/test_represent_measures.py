"""kNN and linear probes, CKA and minibatch CKA (zoo.represent.probes, zoo.represent.similarity), each checked
against a reference written here independently: DINO's kNN rule as a loop per test example, the linear probe's
C chosen by an explicit loop with scikit-learn, and the papers' HSIC formulas written plainly."""
import logging
import math
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zoo.errors import InvalidArgumentError
from zoo.represent import probes
from zoo.represent.probes import ProbeResult, knn_accuracy, linear_probe
from zoo.represent.similarity import MinibatchCKA, center_gram, cka, cka_matrix, gram_linear, gram_rbf

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


# ---------------------------------------------------------------- kNN

def knn_by_loops(train_x, train_y, test_x, test_y, k, temperature):
    """DINO's weighted kNN, one test example at a time: normalise, cosine, sort, weight exp(s/T), vote."""
    train = [row / np.linalg.norm(row) for row in train_x]
    correct = 0
    for x, y in zip(test_x, test_y):
        x = x / np.linalg.norm(x)
        sims = [float(np.dot(x, t)) for t in train]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in nearest:
            votes[train_y[i]] = votes.get(train_y[i], 0.0) + math.exp(sims[i] / temperature)
        best = max(sorted(votes), key=lambda c: votes[c])  # max keeps the first (smallest) label on a tie
        correct += int(best == y)
    return correct / len(test_y)


@pytest.fixture(scope="module")
def clustered():
    """4 overlapping classes in 8-D: train (60) and test (25)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8))
    y_train, y_test = rng.integers(0, 4, 60), rng.integers(0, 4, 25)
    x_train = centres[y_train] + 1.2 * rng.normal(size=(60, 8))
    x_test = centres[y_test] + 1.2 * rng.normal(size=(25, 8))
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("k", [1, 3, 7, 20, 60])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_is_dinos_weighted_vote(clustered, k, temperature):
    expected = knn_by_loops(*clustered, k, temperature)
    assert knn_accuracy(*clustered, k=k, temperature=temperature) == pytest.approx(expected, abs=1e-12)


def test_knn_with_k_1_is_the_nearest_neighbours_label(clustered):
    x_train, y_train, x_test, y_test = clustered
    cos = (x_test / np.linalg.norm(x_test, axis=1)[:, None]) @ (x_train / np.linalg.norm(x_train, axis=1)[:, None]).T
    expected = np.mean([y_train[np.argmax(row)] == y for row, y in zip(cos, y_test)])
    assert 0 < expected < 1
    assert knn_accuracy(x_train, y_train, x_test, y_test, k=1) == pytest.approx(expected)


def test_knn_in_chunks_of_test_rows_gives_the_same_answer(clustered, monkeypatch):
    expected = knn_by_loops(*clustered, 5, 0.07)
    monkeypatch.setattr(probes, "_SIMILARITIES_PER_CHUNK", 7 * 60)  # chunks of 7 test rows, the last one of 4
    assert knn_accuracy(*clustered, k=5) == pytest.approx(expected)


def test_knn_temperature_lets_one_close_neighbour_outvote_two_far_ones():
    # The test point (1, 0) is class 1. Its neighbours: one class-1 point at cosine 1.0, two class-0 points at
    # cosine 0.5. Votes with T=0.07: e^(1/0.07) = 1.6e6 against 2 e^(0.5/0.07) = 2.5e3, so class 1 wins;
    # with T=100 the weights are all about 1 and the majority, class 0, wins.
    train_x = np.array([[1.0, 0.0], [0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)], [-1.0, 0.0]])
    train_y = np.array([1, 0, 0, 1])
    test_x, test_y = np.array([[3.0, 0.0]]), np.array([1])
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=100.0) == 0.0
    # with all 4 as neighbours the far class-1 point (cosine -1) adds almost nothing at T=0.07
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=4, temperature=0.07) == 1.0


def test_knn_takes_any_labels_and_checks_num_classes(clustered):
    x_train, y_train, x_test, y_test = clustered
    names = np.array(["ant", "bee", "cat", "dog"])
    expected = knn_by_loops(x_train, y_train, x_test, y_test, 5, 0.07)
    assert knn_accuracy(x_train, names[y_train], x_test, names[y_test], k=5) == pytest.approx(expected)
    assert knn_accuracy(*clustered, k=5, num_classes=4) == pytest.approx(expected)
    with pytest.raises(InvalidArgumentError, match="num_classes=3"):
        knn_accuracy(*clustered, k=5, num_classes=3)


# ---------------------------------------------------------------- linear probe

def blobs(n_per_class, classes, dims, spread, seed, sample=0):
    """Gaussian blobs around ``classes`` centres (fixed by ``seed``); ``sample`` draws other points."""
    centres = np.random.default_rng(seed).normal(size=(classes, dims)) * 4
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + spread * np.random.default_rng([seed, sample]).normal(size=(len(y), dims)), y


def test_linear_probe_separates_separable_blobs_without_warnings():
    x_train, y_train = blobs(20, 3, 5, 0.3, seed=1)
    x_test, y_test = blobs(10, 3, 5, 0.3, seed=1, sample=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = linear_probe(x_train, y_train, x_test, y_test)
    assert isinstance(result, ProbeResult)
    assert result.accuracy == 1.0 and result.val_accuracy == 1.0
    assert result.C in GRID


def test_linear_probe_on_labels_unrelated_to_features_is_at_chance():
    rng = np.random.default_rng(2)
    result = linear_probe(rng.normal(size=(200, 10)), rng.integers(0, 2, 200),
                          rng.normal(size=(400, 10)), rng.integers(0, 2, 400), Cs=[0.01, 1.0])
    assert 0.4 < result.accuracy < 0.6


def three_of_thirty(n_per_class, seed):
    """3 classes told apart by 3 of 30 features, the rest noise: the best C is neither end of the grid."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    x = rng.normal(size=(len(y), 30))
    x[:, :3] += 2.0 * np.eye(3)[y]
    return x, y


@pytest.mark.parametrize("seed", [0, 1])  # seed 0: one best C, 0.1; seed 1: four Cs tie and the one nearest 1 wins
def test_linear_probe_chooses_c_as_an_explicit_loop_over_the_grid_does(seed):
    x, y = three_of_thirty(30, seed)
    x_test, y_test = three_of_thirty(20, seed + 100)
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    scores = []
    for c in grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=10_000))
        scores.append(model.fit(fit_x, fit_y).score(val_x, val_y))
    tied = [i for i, score in enumerate(scores) if score == max(scores)]
    best = min(tied, key=lambda i: abs(np.log10(grid[i])))  # of the best, the C nearest 1
    assert 0 < best < len(grid) - 1 and (len(tied) > 1) == (seed == 1)
    refit = make_pipeline(StandardScaler(), LogisticRegression(C=grid[best], max_iter=10_000)).fit(x, y)

    result = linear_probe(x, y, x_test, y_test, Cs=grid, seed=0)
    assert result.C == grid[best]
    assert result.val_accuracy == pytest.approx(scores[best])
    assert result.accuracy == pytest.approx(refit.score(x_test, y_test))


def test_linear_probe_with_one_example_per_class_uses_the_default_c_and_says_so(caplog):
    x, y = blobs(1, 4, 5, 0.1, seed=5)
    with caplog.at_level(logging.INFO, logger="zoo.represent.probes"):
        result = linear_probe(x, y, x, y)
    assert result.C == 1.0 and result.val_accuracy is None and result.accuracy == 1.0
    assert "too few" in caplog.text


# ---------------------------------------------------------------- CKA references

def centred(x):
    return x - x.mean(axis=0)


def linear_cka_closed_form(x, y):
    """Kornblith et al. 2019: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred features."""
    x, y = centred(x), centred(y)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def rbf_by_loops(x, threshold):
    n = len(x)
    d2 = [[float(np.sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)]
    median = float(np.median(d2))  # over all n^2 entries, as the reference code
    return np.array([[math.exp(-d2[i][j] / (2 * threshold**2 * median)) for j in range(n)] for i in range(n)])


def hsic_biased(K, L):
    """HSIC = tr(K H L H) / (n - 1)^2, H = I - 11^T / n (Gretton et al. 2005)."""
    n = len(K)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ h @ L @ h) / (n - 1) ** 2


def hsic_unbiased(K, L):
    """HSIC_1 of Song et al. 2012: 1/(n(n-3)) [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~ L~1],
    K~ and L~ the kernel matrices with zero diagonals."""
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def cka_from(hsic, K, L):
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


@pytest.fixture(scope="module")
def related():
    """x (30, 10) and y (30, 6), a noisy linear function of it."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 10))
    return x, x @ rng.normal(size=(10, 6)) + 2.0 * rng.normal(size=(30, 6))


def test_linear_cka_is_the_closed_form_on_centred_features(related):
    x, y = related
    value = cka(x, y)
    assert 0.2 < value < 0.95
    assert value == pytest.approx(linear_cka_closed_form(x, y), rel=1e-10)
    assert cka(x + 5.0, y - 3.0) == pytest.approx(value, rel=1e-10)  # centring is built in
    assert cka(x.reshape(30, 2, 5), y) == pytest.approx(value, rel=1e-10)  # trailing axes are flattened


def test_cka_invariances_the_paper_proves(related):
    x, y = related
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert cka(x, x) == pytest.approx(1.0)
    for kernel in ("linear", "rbf"):
        base = cka(x, y, kernel=kernel)
        assert cka(x @ q, y, kernel=kernel) == pytest.approx(base, rel=1e-9)  # orthogonal transform
        assert cka(3.7 * x, y, kernel=kernel) == pytest.approx(base, rel=1e-9)  # isotropic scaling
    stretch = rng.normal(size=(10, 10)) @ np.diag(np.geomspace(0.05, 20, 10))  # invertible, not orthogonal
    assert abs(cka(x @ stretch, y) - cka(x, y)) > 0.01


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_rbf_cka_is_hsic_of_loop_built_kernels(related, threshold):
    x, y = related
    K, L = rbf_by_loops(x, threshold), rbf_by_loops(y, threshold)
    np.testing.assert_allclose(gram_rbf(x, threshold), K, rtol=1e-10)
    expected = cka_from(hsic_biased, K, L)
    assert cka(x, y, kernel="rbf", threshold=threshold) == pytest.approx(expected, rel=1e-9)


def test_centring_is_h_k_h(related):
    x, _ = related
    k = x @ x.T
    h = np.eye(30) - np.ones((30, 30)) / 30
    np.testing.assert_allclose(gram_linear(x), k)
    np.testing.assert_allclose(center_gram(k), h @ k @ h, atol=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_debiased_cka_uses_songs_unbiased_hsic(related, kernel):
    x, y = related
    K, L = (a @ a.T for a in related) if kernel == "linear" else (rbf_by_loops(a, 1.0) for a in related)
    expected = cka_from(hsic_unbiased, K, L)
    assert cka(x, y, kernel=kernel, debiased=True) == pytest.approx(expected, rel=1e-9)
    assert cka(x, y, kernel=kernel, debiased=True) != pytest.approx(cka(x, y, kernel=kernel), rel=1e-3)
    n = len(K)  # the U-centred matrices' inner product is n(n-3) HSIC_1
    assert np.sum(center_gram(K, unbiased=True) * center_gram(L, unbiased=True)) / (n * (n - 3)) == pytest.approx(
        hsic_unbiased(K, L), rel=1e-9)


# ---------------------------------------------------------------- minibatch CKA

def layers(n, seed):
    """Three 'layers' of a 'network' and two of another, all functions of the same latent factors."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    a = z @ rng.normal(size=(4, 12)) + 0.5 * rng.normal(size=(n, 12))
    xs = [a, np.tanh(a @ rng.normal(size=(12, 8))), rng.normal(size=(n, 3, 3))]  # the last: pure noise
    ys = [z @ rng.normal(size=(4, 6)) + rng.normal(size=(n, 6)), np.maximum(z @ rng.normal(size=(4, 16)), 0)]
    return xs, ys


def minibatch_reference(xs, ys, bounds):
    """Nguyen et al. 2021: mean HSIC_1 over minibatches, then CKA = mean(HSIC_1(K, L)) / sqrt(mean(K, K) mean(L, L))."""
    def hsic_mean(a, b):
        return np.mean([hsic_unbiased(a[s:e].reshape(e - s, -1) @ a[s:e].reshape(e - s, -1).T,
                                      b[s:e].reshape(e - s, -1) @ b[s:e].reshape(e - s, -1).T) for s, e in bounds])
    return np.array([[hsic_mean(x, y) / math.sqrt(hsic_mean(x, x) * hsic_mean(y, y)) for y in ys] for x in xs])


def test_minibatch_cka_of_one_batch_is_the_debiased_cka():
    xs, ys = layers(40, seed=8)
    accumulator = MinibatchCKA(3, 2)
    accumulator.update(xs, ys)
    expected = minibatch_reference(xs, ys, [(0, 40)])
    np.testing.assert_allclose(accumulator.result(), expected, rtol=1e-9)
    np.testing.assert_allclose(cka_matrix(xs, ys, batch_size=40), expected, rtol=1e-9)
    np.testing.assert_allclose(cka_matrix(xs, ys, debiased=True), expected, rtol=1e-9)


def test_minibatch_cka_averages_hsic_over_batches_and_a_short_last_batch_joins_the_one_before():
    xs, ys = layers(50, seed=9)
    expected = minibatch_reference(xs, ys, [(0, 16), (16, 32), (32, 50)])  # 50 = 16 + 16 + 18 (not + 2)
    np.testing.assert_allclose(cka_matrix(xs, ys, batch_size=16), expected, rtol=1e-9)
    expected = minibatch_reference(xs, ys, [(0, 20), (20, 40), (40, 50)])
    np.testing.assert_allclose(cka_matrix(xs, ys, batch_size=20), expected, rtol=1e-9)


def test_minibatch_cka_over_many_batches_is_close_to_the_full_data_cka():
    xs, ys = layers(1000, seed=10)
    exact = np.array([[linear_cka_closed_form(x.reshape(1000, -1), y) for y in ys] for x in xs])
    np.testing.assert_allclose(cka_matrix(xs, ys), exact, rtol=1e-9)
    approx = cka_matrix(xs, ys, batch_size=100)
    assert approx.shape == (3, 2)
    np.testing.assert_allclose(approx, exact, atol=0.03)
    assert exact[:2].min() > 0.3 and np.abs(approx[2]).max() < 0.03  # related layers vs the noise layer


# ---------------------------------------------------------------- bad inputs

X4, Y4 = np.ones((4, 2)), np.array([0, 1, 0, 1])
RNG = np.random.default_rng(11)
F6, G6 = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))

BAD = {
    "knn labels length": lambda: knn_accuracy(X4, Y4[:3], X4, Y4),
    "knn 1-D features": lambda: knn_accuracy(X4[:, 0], Y4, X4, Y4),
    "knn 3-D features": lambda: knn_accuracy(X4, Y4, X4[:, :, None], Y4),
    "knn 2-D labels": lambda: knn_accuracy(X4, Y4[:, None], X4, Y4),
    "knn widths": lambda: knn_accuracy(X4, Y4, np.ones((4, 3)), Y4),
    "knn k 0": lambda: knn_accuracy(X4, Y4, X4, Y4, k=0),
    "knn k too large": lambda: knn_accuracy(X4, Y4, X4, Y4, k=5),
    "knn k float": lambda: knn_accuracy(X4, Y4, X4, Y4, k=2.5),
    "knn temperature 0": lambda: knn_accuracy(X4, Y4, X4, Y4, k=2, temperature=0),
    "knn temperature < 0": lambda: knn_accuracy(X4, Y4, X4, Y4, k=2, temperature=-0.1),
    "knn empty train": lambda: knn_accuracy(np.ones((0, 2)), np.array([]), X4, Y4, k=1),
    "knn empty test": lambda: knn_accuracy(X4, Y4, np.ones((0, 2)), np.array([]), k=1),
    "knn nan": lambda: knn_accuracy(X4 * np.nan, Y4, X4, Y4, k=1),
    "knn num_classes 0": lambda: knn_accuracy(X4, Y4, X4, Y4, k=1, num_classes=0),
    "probe labels length": lambda: linear_probe(X4, Y4, X4, Y4[:2]),
    "probe widths": lambda: linear_probe(X4, Y4, np.ones((4, 3)), Y4),
    "probe 1-D features": lambda: linear_probe(X4[:, 0], Y4, X4, Y4),
    "probe empty test": lambda: linear_probe(X4, Y4, np.ones((0, 2)), np.array([])),
    "probe one class": lambda: linear_probe(X4, np.zeros(4), X4, Y4),
    "probe Cs empty": lambda: linear_probe(X4, Y4, X4, Y4, Cs=[]),
    "probe Cs negative": lambda: linear_probe(X4, Y4, X4, Y4, Cs=[1.0, -1.0]),
    "probe Cs text": lambda: linear_probe(X4, Y4, X4, Y4, Cs=["big"]),
    "probe val_fraction 0": lambda: linear_probe(X4, Y4, X4, Y4, val_fraction=0),
    "probe val_fraction 1": lambda: linear_probe(X4, Y4, X4, Y4, val_fraction=1.0),
    "cka mismatched N": lambda: cka(F6, G6[:5]),
    "cka N 1": lambda: cka(F6[:1], G6[:1]),
    "cka debiased N 3": lambda: cka(F6[:3], G6[:3], debiased=True),
    "cka unknown kernel": lambda: cka(F6, G6, kernel="cosine"),
    "cka threshold 0": lambda: cka(F6, G6, kernel="rbf", threshold=0),
    "cka threshold < 0": lambda: cka(F6, G6, kernel="rbf", threshold=-1.0),
    "cka 1-D": lambda: cka(F6[:, 0], G6),
    "cka inf": lambda: cka(F6 * np.inf, G6),
    "gram_rbf threshold 0": lambda: gram_rbf(F6, threshold=0),
    "gram_rbf identical rows": lambda: gram_rbf(np.ones((6, 3))),
    "center_gram not square": lambda: center_gram(np.ones((3, 4))),
    "center_gram not symmetric": lambda: center_gram(np.arange(9.0).reshape(3, 3)),
    "center_gram unbiased N 3": lambda: center_gram(np.eye(3), unbiased=True),
    "minibatch layers": lambda: MinibatchCKA(2, 1).update([F6], [G6]),
    "minibatch N 3": lambda: MinibatchCKA(1, 1).update([F6[:3]], [G6[:3]]),
    "minibatch mismatched N": lambda: MinibatchCKA(1, 1).update([F6], [G6[:5]]),
    "minibatch no layers": lambda: MinibatchCKA(0, 1),
    "minibatch not a list": lambda: MinibatchCKA(1, 1).update(F6, [G6]),
    "minibatch result first": lambda: MinibatchCKA(1, 1).result(),
    "matrix batch_size 3": lambda: cka_matrix([F6], [G6], batch_size=3),
    "matrix rbf batches": lambda: cka_matrix([F6], [G6], batch_size=4, kernel="rbf"),
    "matrix empty": lambda: cka_matrix([], [G6]),
    "matrix mismatched N": lambda: cka_matrix([F6, F6[:5]], [G6]),
    "matrix unknown kernel": lambda: cka_matrix([F6], [G6], kernel="poly"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise_one_line_invalid_argument_errors(name):
    with pytest.raises(InvalidArgumentError) as error:
        BAD[name]()
    message = str(error.value)
    assert message and "\n" not in message


def test_bad_input_messages_say_what_to_do():
    with pytest.raises(InvalidArgumentError, match=r"\(4 examples\)"):
        knn_accuracy(X4, Y4, X4, Y4, k=5)
    with pytest.raises(InvalidArgumentError, match="linear, rbf"):
        cka(F6, G6, kernel="cosine")
    with pytest.raises(InvalidArgumentError, match="at least 4"):
        cka(F6[:3], G6[:3], debiased=True)
