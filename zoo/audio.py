"""Sound models, waveforms in: a log-mel front end (Keras's ``MelSpectrogram`` layer, inside the model) before any
catalog CNN built with one input channel, where the spectrogram is the CNN's image; and keras-hub's Whisper encoder
(a catalog entry, ``build``) behind Whisper's own log-mel features (``WhisperLogMel``).

Example:
    >>> model = audio_model("resnet_tiny", num_classes=3, sample_rate=16000, samples=16000, pretrained=False)
    >>> zoo.finetune(model, "path/to/sounds", recipe="full", epochs=10)
    >>> whisper = zoo.create_model("whisper_tiny.en", num_classes=3, input_shape=(16000,))  # 1 s clips at 16 kHz
"""
from __future__ import annotations

from pathlib import Path

import keras

import zoo
from zoo.errors import InvalidArgumentError

TOP_DB = 80.0  # the loudness range kept below each clip's loudest point, as Keras's MelSpectrogram clips it
# Whisper's features (Radford et al. 2022, section 2.2): 16 kHz audio, 25 ms windows (400 samples) every 10 ms (160)
WHISPER_RATE, WHISPER_WINDOW, WHISPER_STRIDE = 16000, 400, 160
POOLINGS = ("avg", "none")  # the mean of the encoder's frames (transformers' WhisperForAudioClassification), the frames


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


def build(input_shape: tuple[int], *, config: dict, checkpoint: str | Path | None = None,
          pooling: str = "avg") -> keras.Model:
    """keras-hub's Whisper encoder, from Whisper's log-mel frames ``(batch, frames, mels)`` to ``pooling``: random
    weights from ``config`` (a keras-hub ``WhisperBackbone`` config), or ``checkpoint``'s (a keras-hub preset).
    The decoder is left out. ``input_shape`` is ``(samples,)``; the encoder takes any length up to its position
    table (``max_length`` samples, 30 s)."""
    from zoo.hub import from_preset
    from zoo.hub_config import read_config

    if pooling not in POOLINGS:
        raise InvalidArgumentError(f"pooling='{pooling}' is not one for Whisper: use one of {', '.join(POOLINGS)}")
    if checkpoint is not None:
        config = read_config(checkpoint)
    whole = from_preset(config, checkpoint, {})
    tokens = whole.output["encoder_sequence_output"]
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(tokens) if pooling == "avg" else tokens
    encoder = keras.Model(whole.input["encoder_features"], pooled, name="whisper_encoder")
    encoder.hub_config = None  # the encoder alone is no keras-hub backbone: it has no preset to export
    encoder.max_length = whole.get_config()["max_encoder_sequence_length"] * WHISPER_STRIDE
    encoder.num_mels = whole.get_config()["num_mels"]
    return encoder


def model_inputs(body: keras.Model, checkpoint, samples: int, include_preprocessing: bool):
    """The inputs of a Whisper model and what goes into its encoder: waveforms ``(batch, samples)`` at 16 kHz
    through ``WhisperLogMel``, or with ``include_preprocessing=False`` the log-mel frames themselves."""
    if include_preprocessing:
        waves = keras.Input((samples,), name="waveform")
        return waves, WhisperLogMel(num_mels=body.num_mels, name="log_mel")(waves)
    frames = keras.Input((samples // WHISPER_STRIDE, body.num_mels), name="log_mel")
    return frames, frames


@keras.saving.register_keras_serializable(package="keras_zoo")
class WhisperLogMel(keras.layers.Layer):
    """Whisper's input features inside the model: waveforms ``(batch, samples)`` at 16 kHz to ``(batch,
    samples // 160, num_mels)``. A 400-point Hann STFT every 160 samples (reflect-padded, the last frame dropped),
    power through keras-hub's Slaney mel filters, log10, floored 8 below each clip's peak, then ``(x + 4) / 4``:
    what Whisper's feature extractor and keras-hub's ``WhisperAudioConverter`` compute, as a Keras layer.

    Example:
        >>> WhisperLogMel()(np.zeros((1, 16000), "float32")).shape
        TensorShape([1, 100, 80])
    """

    def __init__(self, num_mels: int = 80, **kwargs):
        super().__init__(**kwargs)
        import keras_hub

        self.num_mels = num_mels
        self.filters = keras_hub.layers.WhisperAudioConverter(num_mels=num_mels, sampling_rate=WHISPER_RATE,
                                                              num_fft_bins=WHISPER_WINDOW,
                                                              stride=WHISPER_STRIDE).mel_filters

    @property
    def sampling_rate(self) -> int:
        return WHISPER_RATE

    def call(self, waves):
        half = WHISPER_WINDOW // 2
        waves = keras.ops.pad(waves, [[0, 0], [half, half]], mode="reflect")
        real, imag = keras.ops.stft(waves, WHISPER_WINDOW, WHISPER_STRIDE, WHISPER_WINDOW, window="hann",
                                    center=False)
        power = (keras.ops.square(real) + keras.ops.square(imag))[:, :-1, :]
        logs = keras.ops.log10(keras.ops.maximum(keras.ops.matmul(power, self.filters), 1e-10))
        logs = keras.ops.maximum(logs, keras.ops.max(logs, axis=(1, 2), keepdims=True) - 8.0)
        return (logs + 4.0) / 4.0

    def compute_output_shape(self, input_shape):
        samples = input_shape[1]
        return (input_shape[0], None if samples is None else samples // WHISPER_STRIDE, self.num_mels)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_mels": self.num_mels}
