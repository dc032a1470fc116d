"""The jobs behind the representation commands (``keras-zoo embed``, ``probe``, ``compare``, ``explain``): each
takes a model by catalog name, run directory or ``.keras`` file, reads data through ``zoo.data.load``, and
writes its pictures and files.

Example:
    >>> text = probe_job("resnet_tiny.digits", "digits", out="probe.png", classes=[5, 6, 7, 8, 9])
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from zoo.config import EMBEDDING_MAPS
from zoo.errors import InvalidArgumentError

log = logging.getLogger(__name__)


def load_model(name: str, image_size: tuple[int, int] | None = None, random: bool = False):
    """A model for the representation tools and its label: a finished run's (a directory holding
    ``model.keras``), a ``.keras`` file, or a catalog entry without a head: ``arch.tag`` with those weights, a
    bare ``arch`` at random initialisation (as timm's ``create_model``). ``random``: the same network at random
    initialisation."""
    import zoo

    path = Path(name).expanduser()
    if path.is_dir() or name.endswith(".keras"):
        file = path / "model.keras" if path.is_dir() else path
        if not file.is_file():
            raise InvalidArgumentError(f"{name} holds no model.keras: give a finished run's directory, a .keras "
                                       "file or a catalog name")
        model = zoo.load_model(file, compile=False)
        if not random:
            return model, name
        entry = zoo.entry_of(model)
        if entry is None:
            raise InvalidArgumentError(f"{name} was not made by create_model, so it has no random-init twin")
        name, image_size = entry.arch, tuple(model.input_shape[1:3])
    from zoo.registry import resolve

    spec, weight = resolve(name)
    pretrained = "." in name and not random
    size = image_size or spec.image_size(weight if pretrained else None)
    model = zoo.create_model(name, pretrained=pretrained, input_shape=tuple(size))
    return model, name if pretrained else f"{spec.arch} (random init)"


def embed_job(model_name: str, data: str, *, out: str, split: str = "test", layer: str | None = None,
              plot: str | None = None, projector: str | None = None, image_size=None,
              data_options: dict | None = None) -> str:
    """Embed one split, save ``features``, ``labels`` and ``class_names`` to ``out`` (.npz), and optionally a
    2-D map (``plot``: tsne or umap, next to ``out``) and TensorBoard projector files (``projector``)."""
    from zoo.files import atomic_save
    from zoo.represent.features import embed
    from zoo.represent.pictures import plot_embedding, write_projector

    model, label = load_model(model_name, image_size)
    emb = embed(model, data, split=split, layer=layer, data_options=data_options)
    atomic_save(out, lambda tmp: np.savez(tmp, features=emb.features, labels=emb.labels,
                                          class_names=np.array(emb.class_names)))
    lines = [f"{len(emb.labels)} embeddings of width {emb.features.shape[1]} ({split} split) in {out}"]
    if plot:
        picture = Path(out).with_suffix(f".{plot}.png")
        plot_embedding(emb.features, emb.labels, emb.class_names, picture, method=plot,
                       title=f"{EMBEDDING_MAPS[plot]} of {label} features on {data} ({split})")
        lines.append(f"map: {picture}")
    if projector:
        write_projector(emb.features, emb.labels, emb.class_names, projector)
        lines.append(f"projector files in {projector}: tensorboard --logdir {projector}")
    return "\n".join(lines)


def probe_job(model_name: str, data: str, *, out: str, k: int = 20, image_size=None, random: bool = True,
              stages: list[str] | None = None, data_options: dict | None = None) -> str:
    """Probe every stage of the model (and, with ``random``, of the same network at random initialisation)
    by kNN and a linear probe; draw ``out`` and return the table."""
    from zoo.represent.layerwise import probe_layers, probe_table
    from zoo.represent.pictures import plot_probe

    model, label = load_model(model_name, image_size)
    results = {label: probe_layers(model, data, k=k, stages=stages, data_options=data_options)}
    if random:
        twin, twin_label = load_model(model_name, tuple(model.input_shape[1:3]), random=True)
        if twin_label != label:
            results[twin_label] = probe_layers(twin, data, k=k, stages=stages, data_options=data_options)
    plot_probe(results, out, title=f"test accuracy of probes by layer, {data}")
    return f"{probe_table(results)}\npicture: {out}"


def compare_job(first: str, second: str | None, data: str, *, out: str, examples: int = 1000,
                batch_size: int = 250, image_size=None, stages: list[str] | None = None,
                data_options: dict | None = None) -> str:
    """Linear CKA between every stage of two models (or of one model against itself), by minibatches over
    ``examples`` test images; draws the heat map to ``out`` and returns its table."""
    from zoo.data import load
    from zoo.represent.layerwise import compare_layers
    from zoo.represent.pictures import plot_cka
    from zoo.text import table

    a, a_label = load_model(first, image_size)
    b, b_label = load_model(second, tuple(a.input_shape[1:3])) if second else (a, a_label)
    test = load(data, model=a, batch_size=batch_size, shuffle=False, **(data_options or {}))[2]
    matrix, rows, columns = compare_layers(a, b, test.unbatch().take(examples).batch(batch_size), stages=stages,
                                           other_stages=stages if b is a else None)
    names = (a_label, b_label)
    plot_cka(matrix, rows, columns, out, *names, title=f"linear CKA (minibatch), {data}")
    body = [[row, *values] for row, values in zip(rows, matrix)]
    return f"{names[0]} (rows) against {names[1]} (columns)\n{table(body, ['layer', *columns], '.3f')}\npicture: {out}"
