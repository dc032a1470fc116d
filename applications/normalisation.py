"""Input normalisation modes as plain data (no Keras): each maps raw 0-255 RGB pixels to ``(x * scale - mean) / std``.

The catalog (which must not import TensorFlow) names a mode per entry, the ``Preprocessing`` layer applies it,
and a checkpoint directory's own mean and std are matched to one here.

Example:
    >>> mode_of((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    'tf'
"""
from __future__ import annotations

# mode: (scale, mean, std, reverse channels to BGR), per channel in RGB order, as keras.applications uses them
MODES = {
    "caffe": (1.0, (123.68, 116.779, 103.939), (1.0, 1.0, 1.0), True),
    "tf": (1 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), False),
    "torch": (1 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    # OpenAI CLIP's mean and std (also OpenCLIP's and keras-hub's CLIP image converter)
    "clip": (1 / 255.0, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), False),
    "rescale": (1 / 255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
}


def mode_of(mean, std) -> str | None:
    """The mode whose mean and std (on [0, 1] pixels) are ``mean`` and ``std``, or None."""
    for mode, (scale, mode_mean, mode_std, reverse) in MODES.items():
        if reverse:
            continue
        unit = [m / (255.0 * scale) for m in mode_mean], [s / (255.0 * scale) for s in mode_std]  # on [0, 1] pixels
        if all(abs(a - b) < 1e-3 for a, b in zip([*mean, *std], [*unit[0], *unit[1]])):
            return mode
    return None
