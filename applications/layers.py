"""Layers every family shares: input normalisation (so models take raw 0-255 images) and pooling."""
import keras
import numpy as np

from applications.normalisation import MODES as _MODES


def adapt_channels(values, channels: int) -> np.ndarray:
    """Fit a per-channel RGB vector to ``channels``: the mean for one channel, else repeat and truncate.

    Example:
        >>> adapt_channels([1.0, 2.0, 3.0], 4).tolist()
        [1.0, 2.0, 3.0, 1.0]
    """
    values = np.asarray(values, dtype="float32")
    if channels == 1:
        return values.mean(keepdims=True)
    return np.resize(values, channels)


@keras.saving.register_keras_serializable(package="keras_zoo")
class Preprocessing(keras.layers.Layer):
    """``keras.applications.<module>.preprocess_input`` as a layer: ``(x * scale - mean) / std``.

    Modes: ``caffe`` (RGB to BGR, ImageNet mean subtracted), ``tf`` (to [-1, 1]), ``torch``
    (to [0, 1], ImageNet mean and std), ``rescale`` (to [0, 1]). With other than three channels the
    constants are adapted as the first convolution is (their mean for one channel) and the channel
    order is kept.

    Example:
        >>> Preprocessing("tf")(np.full((1, 2, 2, 3), 255.0)).numpy().max()
        1.0
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"unknown preprocessing mode '{mode}': use one of {sorted(_MODES)}")
        self.mode = mode

    def build(self, input_shape):
        channels = input_shape[-1]
        scale, mean, std, reverse = _MODES[self.mode]
        self._reverse = reverse and channels == 3
        order = slice(None, None, -1) if self._reverse else slice(None)
        self._scale = scale
        self._mean = adapt_channels(mean, channels)[order]
        self._std = adapt_channels(std, channels)[order]
        self.built = True

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self._reverse:
            x = keras.ops.flip(x, axis=-1)
        mean = keras.ops.cast(self._mean, self.compute_dtype)
        std = keras.ops.cast(self._std, self.compute_dtype)
        return (x * self._scale - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def scale_offset(self) -> tuple[list[float], list[float]]:
        """The same map as ``x * scale + offset`` per channel (keras-hub's ``ImageConverter``); not for "caffe",
        which also reverses the channels."""
        if self._reverse:
            raise ValueError("'caffe' preprocessing reverses the channels: it has no per-channel scale and offset")
        return [float(v) for v in self._scale / self._std], [float(v) for v in -self._mean / self._std]

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_zoo")
class TokenPooling(keras.layers.Layer):
    """The class token: ``tokens[:, 0]``."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
