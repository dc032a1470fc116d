"""What an image's prediction rests on: Grad-CAM, attention rollout, integrated gradients, and overlays.

Every method explains the class's score before any softmax (a model whose last layer is a softmax Dense or
Activation is explained through its pre-activation logits) and returns heat maps (N, H, W) in [0, 1] at the
input's resolution: ReLU, then divided by each map's maximum (an all-zero map stays zero).

- ``gradcam`` (Selvaraju et al. 2017): CNNs; the target is the last catalog stage unless ``layer`` names one.
- ``attention_rollout`` (Abnar & Zuidema 2020): zoo ViTs, from their attention probabilities.
- ``integrated_gradients`` (Sundararajan et al. 2017): any differentiable model.

Example:
    >>> heat = gradcam(model, images)                          # (N, H, W)
    >>> overlay(images[0], heat[0], "cat.gradcam.png", title="cat 0.93")
    >>> explain_files(model, ["cat.jpg", "dog.jpg"])           # cat.gradcam.png, dog.gradcam.png beside them
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from zoo.backbone import entry_of, find_backbone
from zoo.config import SALIENCY_METHODS
from zoo.errors import InvalidArgumentError
from zoo.evaluation import from_logits
from zoo.files import atomic_save
from zoo.represent.features import check_images, layer_names, tap

log = logging.getLogger("zoo.represent.saliency")

METHODS = SALIENCY_METHODS  # "auto": by the model's kind
HEAD_FUSIONS = ("mean", "max", "min")


def gradcam(model: keras.Model, images, *, class_index: int | Sequence[int] | None = None, layer: str | None = None,
            batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heat maps (N, H, W) in [0, 1]: the target layer's maps A weighted by the spatial mean of
    d score / d A, summed over channels, ReLU, upsampled bilinearly to the input size, divided by the maximum.

    Args:
        images: a batch of raw images (N, H, W, C), as the model takes them.
        class_index: None for each image's predicted class; an int for all images, or one per image.
        layer: the target layer's name (at any depth); None for the last catalog stage.

    Example:
        >>> gradcam(model, images, class_index=2).shape
        (8, 16, 16)
    """
    images = check_images(model, images)
    if layer is None:
        entry = entry_of(model)
        if entry is None or not entry.stages:
            raise InvalidArgumentError(f"{model.name} declares no catalog stages: name the target layer, e.g. "
                                       f"layer={_last_map_layer(model)!r}")
        layer = entry.stages[-1]
    scorer = _scorer(model, [layer])
    maps_shape = scorer.outputs[0].shape
    if len(maps_shape) != 4:
        raise InvalidArgumentError(f"layer {layer!r} outputs {tuple(maps_shape)}, not feature maps (N, H, W, C): "
                                   "for a transformer use attention_rollout or integrated_gradients")
    classes = _classes(class_index, len(images), scorer.outputs[-1].shape[-1])
    cams = []
    for start in range(0, len(images), _positive("batch_size", batch_size)):
        cams.append(_gradcam_batch(scorer, images[start:start + batch_size],
                                   None if classes is None else classes[start:start + batch_size]))
    cams = np.concatenate(cams) if cams else np.zeros((0, *maps_shape[1:3]), "float32")
    return _normalised(_resized(cams, images.shape[1:3]))


def _gradcam_batch(scorer: keras.Model, images: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        maps, logits = scorer(tf.constant(images), training=False)
        score = _class_scores(logits, classes)
    grads = tape.gradient(score, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (N, 1, 1, K): one weight per channel
    return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy()


def attention_rollout(model: keras.Model, images, *, discard_ratio: float = 0.0, head_fusion: str = "mean",
                      batch_size: int = 32) -> np.ndarray:
    """Attention rollout heat maps (N, H, W) in [0, 1] for a zoo ViT (blocks ``block{i}_attn`` that read
    ``block{i}_norm1``): each block's attention probabilities, heads fused (``head_fusion``: mean, max or min),
    the lowest ``discard_ratio`` of each fused matrix's entries zeroed, identity added, rows renormalised, then
    multiplied through the blocks; the class token's row over the patch tokens (without a class token: the
    mean of all tokens' rows), on the patch grid, upsampled bilinearly to the input size, divided by the maximum.

    Example:
        >>> attention_rollout(vit, images).shape
        (8, 32, 32)
    """
    import tensorflow as tf

    images = check_images(model, images)
    if head_fusion not in HEAD_FUSIONS:
        raise InvalidArgumentError(f"unknown head_fusion {head_fusion!r}: use one of {', '.join(HEAD_FUSIONS)}")
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise InvalidArgumentError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    blocks = _attention_blocks(model)
    tapped = tap(model, [f"{b}_norm1" for b in blocks])
    attention = [_find_layer(model, f"{b}_attn") for b in blocks]
    prefix = 1 if "class_token" in layer_names(model) else 0
    rows = []
    for start in range(0, len(images), _positive("batch_size", batch_size)):
        *normed, _ = tapped(tf.constant(images[start:start + batch_size]), training=False)
        rollout = None
        for attn, y in zip(attention, normed):
            _, probs = attn(y, y, return_attention_scores=True, training=False)  # (N, heads, T, T)
            fused = _fused(np.asarray(probs, dtype="float64"), head_fusion, discard_ratio)
            fused = fused + np.eye(fused.shape[-1])
            fused /= fused.sum(axis=-1, keepdims=True)
            rollout = fused if rollout is None else fused @ rollout
        rows.append(rollout[:, 0, prefix:] if prefix else rollout.mean(axis=1))
    height, width = images.shape[1:3]
    patches = rows[0].shape[-1] if rows else 1
    grid_h = max(1, round((patches * height / width) ** 0.5))
    if grid_h * (patches // grid_h) != patches:
        raise InvalidArgumentError(f"{model.name}'s {patches} patch tokens do not tile its {height}x{width} input")
    grid = np.concatenate(rows).reshape(-1, grid_h, patches // grid_h) if rows else np.zeros((0, 1, 1))
    return _normalised(_resized(grid.astype("float32"), (height, width)))


def _fused(probs: np.ndarray, head_fusion: str, discard_ratio: float) -> np.ndarray:
    fused = getattr(probs, head_fusion)(axis=1)
    drop = int(fused[0].size * discard_ratio)
    if drop:  # zero each image's weakest weights (jacobgil/vit-explain's discard_ratio, which also spares [0, 0])
        flat = fused.reshape(len(fused), -1)
        np.put_along_axis(flat, np.argsort(flat, axis=-1)[:, :drop], 0.0, axis=-1)
    return fused


def _attention_blocks(model: keras.Model) -> list[str]:
    """The block names ``b`` of a zoo ViT: a MultiHeadAttention ``{b}_attn`` reading ``{b}_norm1``."""
    names = layer_names(model)
    blocks = [n.removesuffix("_attn") for n in names
              if n.endswith("_attn") and isinstance(_find_layer(model, n), keras.layers.MultiHeadAttention)]
    if not blocks or any(f"{b}_norm1" not in names for b in blocks):
        raise InvalidArgumentError(f"{model.name} has no zoo transformer blocks (block{{i}}_attn reading "
                                   "block{i}_norm1): use gradcam for a CNN, or integrated_gradients")
    return blocks


def integrated_gradients(model: keras.Model, images, *, class_index: int | Sequence[int] | None = None,
                         baseline=None, steps: int = 50, heatmap: bool = True, batch_size: int = 64) -> np.ndarray:
    """Integrated gradients: attributions (x - x') * the mean over ``steps`` alphas (midpoint Riemann sum) of
    d score / d input along the straight path from the baseline x' to x.

    Returns heat maps (N, H, W) in [0, 1] (attributions summed over channels, ReLU, divided by the maximum),
    or with ``heatmap=False`` the raw attributions (N, H, W, C), whose sum is close to score(x) - score(x').

    Args:
        baseline: None for black (zeros), else one image (H, W, C) or one per image (N, H, W, C).
        batch_size: interpolated images per gradient pass (there are N * steps of them).

    Example:
        >>> integrated_gradients(model, images, steps=50).shape
        (8, 16, 16)
    """
    import tensorflow as tf

    images = check_images(model, images)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InvalidArgumentError(f"steps must be a positive integer, got {steps!r}")
    baseline = np.zeros_like(images) if baseline is None else np.asarray(baseline, dtype="float32")
    if baseline.shape not in (images.shape, images.shape[1:]):
        raise InvalidArgumentError(f"baseline must have shape {images.shape[1:]} or {images.shape}, "
                                   f"got {baseline.shape}")
    baseline = np.broadcast_to(baseline, images.shape)
    scorer = _scorer(model, [])
    classes = _classes(class_index, len(images), scorer.outputs[-1].shape[-1])
    if classes is None:
        classes = np.argmax(_logits(scorer, images, batch_size), axis=-1)
    alphas = ((np.arange(steps) + 0.5) / steps).astype("float32")
    grads = np.zeros(images.shape, dtype="float64")
    # one flat list of the N * steps path points, cut into batches of any size
    for start in range(0, len(images) * steps, _positive("batch_size", batch_size)):
        flat = np.arange(start, min(start + batch_size, len(images) * steps))
        which, alpha = flat // steps, alphas[flat % steps].reshape(-1, 1, 1, 1)
        points = tf.constant(baseline[which] + alpha * (images[which] - baseline[which]))
        with tf.GradientTape() as tape:
            tape.watch(points)
            score = _class_scores(scorer(points, training=False), classes[which])
        np.add.at(grads, which, tape.gradient(score, points).numpy())
    attributions = ((images - baseline) * grads / steps).astype("float32")
    if not heatmap:
        return attributions
    return _normalised(np.maximum(attributions.sum(axis=-1), 0.0))


def overlay(image, heat, path: str | os.PathLike, *, alpha: float = 0.45, title: str | None = None,
            cmap: str = "jet") -> Path:
    """Write a PNG (460 pixels wide) of the heat map over the image, with a colour bar; returns its path.

    Args:
        image: (H, W, C) or (H, W), 0-255 as the model takes it (or already in [0, 1]).
        heat: (h, w) in [0, 1], stretched over the image.

    Example:
        >>> overlay(images[0], gradcam(model, images[:1])[0], "cat.gradcam.png", title="cat 0.93")
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are

    image, heat = np.asarray(image, dtype="float32"), np.asarray(heat, dtype="float32")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)) or heat.ndim != 2:
        raise InvalidArgumentError(f"overlay takes an image (H, W[, 1|3|4]) and a heat map (h, w), got "
                                   f"{image.shape} and {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha must be in [0, 1], got {alpha}")
    if image.max(initial=0.0) > 1.0:
        image = image / 255.0
    height, width = image.shape[:2]
    extent = (0, width, height, 0)
    fig = Figure(figsize=(4.6, 4 * height / width + 0.4), dpi=100, layout="constrained")  # 0.6 in: the bar
    ax = fig.subplots()
    ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, extent=extent,
              interpolation="nearest")
    shown = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent, interpolation="bilinear")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10, wrap=True)
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))


def explain_files(model: keras.Model, paths: Sequence[str | os.PathLike], *, method: str = "auto",
                  out_dir: str | os.PathLike | None = None, class_names: Sequence[str] | None = None) -> list[Path]:
    """Read image files, explain the model's prediction on each, and write ``<stem>.<method>.png`` overlays
    next to the inputs (or into ``out_dir``), titled with the predicted class and its probability.

    ``method="auto"``: gradcam for a model whose last catalog stage gives feature maps, attention_rollout for
    a zoo ViT, integrated_gradients otherwise.

    Example:
        >>> explain_files(model, ["cat.jpg"], class_names=["cat", "dog"])
        [PosixPath('cat.gradcam.png')]
    """
    from zoo.data import read_image

    if method not in METHODS:
        raise InvalidArgumentError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    height, width, channels = _image_size(model)
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InvalidArgumentError("explain_files needs at least one image file")
    images = np.stack([read_image(str(p), (height, width), channels) for p in paths])
    method = _auto(model) if method == "auto" else method
    explain = {"gradcam": gradcam, "attention_rollout": attention_rollout,
               "integrated_gradients": integrated_gradients}[method]
    heat = explain(model, images)
    logits = _logits(_scorer(model, []), images, 32)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    names = list(class_names) if class_names is not None else [str(i) for i in range(probs.shape[-1])]
    if len(names) != probs.shape[-1]:
        raise InvalidArgumentError(f"{model.name} has {probs.shape[-1]} classes but {len(names)} class names "
                                   "were given: give one name per class")
    written = []
    for path, image, map_, p in zip(paths, images, heat, probs):
        target = Path(out_dir) if out_dir is not None else path.parent
        best = int(np.argmax(p))
        title = f"{path.name}: {names[best]} ({p[best]:.2f}), {method.replace('_', ' ')}"
        written.append(overlay(image, map_, target / f"{path.stem}.{method}.png", title=title))
        log.info("wrote %s", written[-1])
    return written


def _auto(model: keras.Model) -> str:
    entry, body = entry_of(model), find_backbone(model)
    if entry is not None and entry.stages and len(body.get_layer(entry.stages[-1]).output.shape) == 4:
        return "gradcam"
    try:
        _attention_blocks(model)
        return "attention_rollout"
    except InvalidArgumentError:
        return "integrated_gradients"


def _image_size(model: keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or None in shape:
        raise InvalidArgumentError(f"{model.name} takes inputs of shape {shape}: explain_files needs a model "
                                   "built for images of a fixed (height, width, channels)")
    return shape


def _scorer(model: keras.Model, names: Sequence[str]) -> keras.Model:
    """A model from ``model``'s inputs to the outputs of the layers ``names``, then its logits (N, classes);
    with no ``names``, the model of the logits alone."""
    if not from_logits(model):
        model = _without_softmax(model)
    scorer = tap(model, list(names)) if names else model
    if len(scorer.outputs[-1].shape) != 2:
        raise InvalidArgumentError(f"{model.name} outputs {tuple(scorer.outputs[-1].shape)}: saliency explains a "
                                   "classifier's scores (N, classes)")
    return scorer


def _without_softmax(model: keras.Model) -> keras.Model:
    """The model of ``model``'s logits: its last layer's input (a softmax Activation), or a linear twin of its
    last layer (a softmax Dense) on that input."""
    last = model.layers[-1]
    if not isinstance(last, (keras.layers.Dense, keras.layers.Activation)):
        raise InvalidArgumentError(f"{model.name} ends in a softmax inside {last.name!r}: give a model whose "
                                   "last layer outputs the logits (or a softmax Dense/Activation layer)")
    if isinstance(last, keras.layers.Activation):
        return keras.Model(model.inputs, last.input, name=model.name)
    # a twin of the last Dense without its activation, on the same graph (shared layers' outputs stay reachable)
    twin = keras.layers.Dense.from_config({**last.get_config(), "activation": "linear"})
    logits = twin(last.input)
    twin.set_weights(last.get_weights())
    return keras.Model(model.inputs, logits, name=model.name)


def _logits(scorer: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The logits (N, classes) of ``images``, called eagerly in batches (``predict`` would retrace for each new
    scorer)."""
    batches = [keras.ops.convert_to_numpy(scorer(images[i:i + batch_size], training=False))
               for i in range(0, len(images), _positive("batch_size", batch_size))]
    return np.concatenate(batches) if batches else np.zeros((0, scorer.outputs[-1].shape[-1]), "float32")


def _class_scores(logits, classes):
    """The sum over the batch of each image's score of its class (its predicted class when ``classes`` is None)."""
    import tensorflow as tf

    if classes is None:
        classes = tf.argmax(logits, axis=-1)
    return tf.reduce_sum(tf.gather(logits, tf.cast(classes, "int32"), axis=1, batch_dims=1))


def _classes(class_index, count: int, num_classes: int) -> np.ndarray | None:
    if class_index is None:
        return None
    values = np.asarray(class_index)
    if values.ndim == 0:
        values = np.full(count, values)
    if values.dtype.kind not in "iu" or values.shape != (count,):
        raise InvalidArgumentError(f"class_index must be None, an int or {count} ints (one per image), "
                                   f"got {class_index!r}")
    if count and (values.min() < 0 or values.max() >= num_classes):
        raise InvalidArgumentError(f"class_index must be in [0, {num_classes}), got {class_index!r}")
    return values.astype("int64")


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _resized(maps: np.ndarray, size) -> np.ndarray:
    """Bilinear upsampling of (N, h, w) maps to (N, *size)."""
    import tensorflow as tf

    if maps.shape[1:3] == tuple(size):
        return maps
    return tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]


def _normalised(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (an all-zero map stays zero), clipped to [0, 1] against rounding."""
    top = maps.max(axis=(1, 2), keepdims=True) if len(maps) else np.zeros((0, 1, 1))
    out = np.divide(maps, top, out=np.zeros_like(maps, dtype="float32"), where=top > 0)
    return np.clip(out, 0.0, 1.0).astype("float32")


def _find_layer(model: keras.Layer, name: str) -> keras.Layer | None:
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return layer
        found = _find_layer(layer, name)
        if found is not None:
            return found
    return None


def _last_map_layer(model: keras.Model) -> str:
    """The last top-level layer with 4-D output (a suggestion for ``layer=``)."""
    maps = [layer.name for layer in model.layers if len(layer.output.shape) == 4]
    return maps[-1] if maps else "conv_name"
