"""Pictures of representations: 2-D maps of embeddings (t-SNE, UMAP), TensorBoard's projector files,
probe accuracy by layer, CKA heat maps, label-efficiency curves. Every picture is written atomically and stays
readable with long class names and many classes.

Example:
    >>> plot_embedding(emb.features, emb.labels, emb.class_names, "tsne.png")
    >>> plot_cka(matrix, ["1", "2", "4"], ["1", "2", "4"], "cka.png", "pretrained", "random init")
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.config import EMBEDDING_MAPS
from zoo.errors import InvalidArgumentError
from zoo.files import atomic_save, atomic_write

_LONGEST = 28  # characters of a class name shown in a legend


def _short(name: str) -> str:
    return name if len(name) <= _LONGEST else name[:_LONGEST - 1] + "…"


def project(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D coordinates of ``features`` (N, D): scikit-learn's t-SNE, or UMAP (``pip install umap-learn``)."""
    if method not in EMBEDDING_MAPS:
        raise InvalidArgumentError(f"unknown map {method!r}: use one of {', '.join(EMBEDDING_MAPS)}")
    if len(features) < 3:
        raise InvalidArgumentError(f"a map needs at least 3 examples, got {len(features)}")
    if method == "umap":
        try:
            import umap
        except ImportError as e:
            raise InvalidArgumentError("method 'umap' needs umap-learn: pip install 'keras-zoo[umap]', "
                                       "or use 'tsne'") from e
        return umap.UMAP(random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)  # scikit-learn needs perplexity < N
    return TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_embedding(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path, *,
                   method: str = "tsne", title: str | None = None, seed: int = 0) -> Path:
    """A 2-D map of ``features`` coloured by class, the legend outside the points (beyond 20 classes, the
    class names are written at each class's centre instead)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    xy = project(np.asarray(features, dtype="float64"), method, seed)
    labels = np.asarray(labels)
    n = max(len(class_names), int(labels.max()) + 1 if len(labels) else 0)
    names = [_short(str(c)) for c in class_names] + [str(i) for i in range(len(class_names), n)]
    fig = Figure(figsize=(7 + (0.09 * max(map(len, names)) if n <= 20 else 0), 6.5), layout="constrained")
    ax = fig.subplots()
    colours = colormaps["tab20" if n > 10 else "tab10"]
    for c in range(n):
        at = labels == c
        ax.scatter(xy[at, 0], xy[at, 1], s=10, color=colours(c % colours.N), label=names[c])
        if n > 20 and at.any():
            ax.annotate(names[c], xy[at].mean(axis=0), fontsize=7, ha="center")
    if n <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    ax.set(title=title or f"{EMBEDDING_MAPS[method]} of {len(labels)} embeddings", xticks=[], yticks=[])
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))


def write_projector(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str], folder) -> Path:
    """Files for TensorBoard's embedding projector in ``folder``: ``tensors.tsv``, ``metadata.tsv`` (the
    class of each row) and ``projector_config.pbtxt``; view with ``tensorboard --logdir FOLDER``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "tensors.tsv", "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in features))
    atomic_write(folder / "metadata.tsv", "".join(f"{class_names[y] if y < len(class_names) else y}\n"
                                                  for y in np.asarray(labels)))
    atomic_write(folder / "projector_config.pbtxt",
                 'embeddings {\n  tensor_path: "tensors.tsv"\n  metadata_path: "metadata.tsv"\n}\n')
    return folder


def plot_probe(results: dict, path, title: str = "probe accuracy by layer") -> Path:
    """kNN and linear-probe accuracy against layer, one colour per model (``{name: [LayerScore, ...]}``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (name, rows) in enumerate(results.items()):
        x = range(len(rows))
        ax.plot(x, [r.linear for r in rows], "-o", color=f"C{i}", label=f"{name}: linear probe")
        ax.plot(x, [r.knn for r in rows], "--s", color=f"C{i}", label=f"{name}: kNN")
    layers = [r.layer for r in next(iter(results.values()))]
    ax.set_xticks(range(len(layers)), layers, rotation=0 if max(map(len, layers)) < 8 else 30)
    ax.set(xlabel="layer (bottom to top)", ylabel="test accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))


def plot_cka(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path, row_model: str,
             column_model: str, title: str = "linear CKA") -> Path:
    """A CKA heat map: layers of ``row_model`` (bottom to top, upwards) against those of ``column_model``."""
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    size = min(2.5 + 0.6 * max(matrix.shape), 14)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, origin="lower", cmap="magma", vmin=0, vmax=1)
    if max(matrix.shape) <= 16:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=0 if max(map(len, columns)) < 8 else 45, ha="right"
                  if max(map(len, columns)) >= 8 else "center")
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=f"{column_model} layer", ylabel=f"{row_model} layer", title=title)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))


def plot_label_efficiency(per_class: Sequence[int], curves: dict[str, Sequence[float]], path,
                          title: str = "test accuracy against labels per class") -> Path:
    """Test accuracy against labelled examples per class, one line per model (pretrained, scratch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (name, values) in enumerate(curves.items()):
        ax.plot(per_class, values, "-o", color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_xticks(list(per_class), [str(n) for n in per_class])
    ax.set(xlabel="labelled examples per class", ylabel="test accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
