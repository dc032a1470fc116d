"""Sound models: a log-mel front end (Keras's ``MelSpectrogram`` layer, inside the model) before any catalog CNN
built with one input channel, so that raw waveforms go in and the spectrogram is the CNN's image.

Example:
    >>> model = audio_model("resnet_tiny", num_classes=3, sample_rate=16000, samples=16000, pretrained=False)
    >>> zoo.finetune(model, "path/to/sounds", recipe="full", epochs=10)
"""
from __future__ import annotations

import keras

import zoo
from zoo.errors import InvalidArgumentError

TOP_DB = 80.0  # the loudness range kept below each clip's loudest point, as Keras's MelSpectrogram clips it


def audio_model(name: str, *, num_classes: int | None = None, sample_rate: int = 16000, samples: int = 16000,
                mel_bins: int = 64, hop: int | None = None, **create_kwargs) -> keras.Model:
    """A model from waveforms ``(batch, samples)`` at ``sample_rate`` to ``name``'s outputs: ``mel_bins`` log-mel
    bands every ``hop`` samples (10 ms by default), scaled to 0-255 per clip, as a one-channel image for the CNN
    that ``zoo.create_model(name, in_channels=1, ...)`` builds (``create_kwargs``: its other arguments)."""
    for key, value in (("sample_rate", sample_rate), ("samples", samples), ("mel_bins", mel_bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{key} must be a positive integer, got {value!r}")
    hop = hop or max(1, sample_rate // 100)
    fft = 1 << max(hop * 2 - 1, 1).bit_length()  # a power of two covering two hops
    waves = keras.Input((samples,), name="waveform")
    bands = keras.layers.MelSpectrogram(fft_length=fft, sequence_stride=hop, sampling_rate=sample_rate,
                                        num_mel_bins=mel_bins, max_freq=sample_rate / 2, top_db=TOP_DB,
                                        name="log_mel")(waves)
    image = SpectrogramImage(name="spectrogram_image")(bands)
    network = zoo.create_model(name, num_classes=num_classes, in_channels=1, input_shape=tuple(image.shape[1:3]),
                               **create_kwargs)
    return keras.Model(waves, network(image), name=f"{network.name}_audio")


@keras.saving.register_keras_serializable(package="keras_zoo")
class SpectrogramImage(keras.layers.Layer):
    """Log-mel bands ``(batch, bands, frames)`` in dB as a one-channel 0-255 image ``(batch, bands, frames, 1)``:
    each clip's loudest point is 255 and ``TOP_DB`` below it is 0 (the zoo's CNNs take raw 0-255 images)."""

    def call(self, bands):
        loudest = keras.ops.max(bands, axis=(1, 2), keepdims=True)
        scaled = keras.ops.clip((bands - loudest + TOP_DB) * (255.0 / TOP_DB), 0.0, 255.0)
        return keras.ops.expand_dims(scaled, -1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 1)
