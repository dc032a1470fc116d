"""Adapter over keras.applications: one builder for all of its constructors."""
import keras

from applications.compat import fresh_layer_names
from applications.layers import adapt_channels

# keras.applications.efficientnet scales by these after its Normalization layer, but only when it
# is built with weights="imagenet" (a model built with weights=None lacks that layer).
_EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)


def build(constructor: str, input_shape: tuple[int, int, int], **kwargs) -> keras.Model:
    """A keras.applications backbone: no top, no pooling, random weights.

    Example:
        >>> build("MobileNetV3Small", (32, 32, 3)).output.shape
        (None, 1, 1, 576)
    """
    fn = getattr(keras.applications, constructor)
    # keras.applications leaves many layers unnamed ("re_lu_7"), numbered by a session-wide counter;
    # the catalog names stage layers, so a backbone must get the same names whatever was built before.
    with fresh_layer_names():
        return fn(include_top=False, weights=None, input_shape=tuple(input_shape), pooling=None, **kwargs)


def fold_efficientnet_stddev(backbone: keras.Model) -> None:
    """Fold EfficientNet's ImageNet ``1/sqrt(stddev)`` rescaling into its Normalization variance.

    ``(x - m) / sqrt(v) / sqrt(s) == (x - m) / sqrt(v * s)``, so a backbone built with
    ``weights=None`` and loaded from the ImageNet file computes what keras.applications computes.
    """
    norm = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization))
    channels = norm.adapt_variance.shape[-1]
    norm.adapt_variance.assign(norm.adapt_variance * adapt_channels(_EFFICIENTNET_STDDEV_RGB, channels))
    norm.finalize_state()
