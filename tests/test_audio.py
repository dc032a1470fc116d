"""Sounds: .wav folders in zoo.data.load, the log-mel front end before a catalog CNN, fine-tuning on synthesised
tones, chirps and noise, and the wav files that are refused."""
import wave
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.data import load
from zoo.errors import DataError, InvalidArgumentError

RATE, SECONDS = 8000, 0.5


def _write(path: Path, samples: np.ndarray, *, channels: int = 1, width: int = 2, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scaled = np.clip(samples, -1, 1)
    data = (scaled * 32767).astype("<i2").tobytes() if width == 2 else ((scaled + 1) * 127.5).astype("u1").tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)


def _sounds(root: Path, per_class: int = 12) -> Path:
    """Three classes a spectrogram tells apart: a steady tone, a rising chirp, white noise (random pitch, phase,
    loudness and length for each clip)."""
    rng = np.random.default_rng(0)
    for i in range(per_class):
        n = int(RATE * SECONDS * rng.uniform(0.7, 1.0))
        t = np.arange(n) / RATE
        loud = rng.uniform(0.2, 0.8)
        _write(root / "tone" / f"{i}.wav", loud * np.sin(2 * np.pi * rng.uniform(300, 1500) * t + rng.uniform(0, 6)))
        start, stop = rng.uniform(200, 500), rng.uniform(2000, 3500)
        phase = 2 * np.pi * (start * t + (stop - start) * t ** 2 / (2 * SECONDS))
        _write(root / "chirp" / f"{i}.wav", loud * np.sin(phase))
        _write(root / "noise" / f"{i}.wav", loud * rng.uniform(-1, 1, n))
    return root


def test_a_wav_folder_loads_as_padded_waveforms(tmp_path):
    root = _sounds(tmp_path)
    train, val, test, info = load(root, batch_size=4, val_fraction=0, test_fraction=0, shuffle=False)
    assert info.modality == "audio" and info.sample_rate == RATE and info.class_names == ("chirp", "noise", "tone")
    lengths = []
    for path in sorted(root.rglob("*.wav")):
        with wave.open(str(path)) as f:
            lengths.append(f.getnframes())
    x = np.concatenate([batch.numpy() for batch, _ in train])
    assert x.shape == (36, max(lengths)) and x.dtype == np.float32  # padded with silence to the longest clip
    with wave.open(str(root / "chirp" / "0.wav")) as f:
        first = np.frombuffer(f.readframes(f.getnframes()), "<i2") / 32768.0
    same = [row for row in x if np.allclose(row[:len(first)], first, atol=1e-6)]  # its place: the split's order
    assert len(same) == 1 and not same[0][len(first):].any()


def test_the_front_end_makes_a_log_mel_image_for_a_catalog_cnn(tmp_path):
    model = zoo.audio_model("resnet_tiny", num_classes=3, sample_rate=RATE, samples=4000, pretrained=False)
    image = model.get_layer("spectrogram_image").output
    assert tuple(image.shape[1:]) == (64, 4000 // (RATE // 100) + 1, 1)
    t = np.arange(4000) / RATE
    tone = np.sin(2 * np.pi * 1000 * t)[None].astype("float32")
    bands = model.get_layer("log_mel")(tone).numpy()[0]
    assert abs(int(bands.mean(axis=1).argmax()) - _mel_bin(1000.0, 64)) <= 1  # the tone's band is the loudest
    path = tmp_path / "audio.keras"
    model.save(path)
    again = zoo.load_model(path)
    np.testing.assert_allclose(again.predict(tone, verbose=0), model.predict(tone, verbose=0), atol=1e-6)


def _mel_bin(hz: float, bins: int, top: float = RATE / 2, low: float = 20.0) -> int:
    """The mel band a frequency falls in (HTK's mel scale, as Keras's MelSpectrogram), computed by hand."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = np.linspace(mel(low), mel(top), bins + 2)
    return int(np.argmin(np.abs(edges[1:-1] - mel(hz))))


def test_a_catalog_cnn_fine_tunes_on_sounds(tmp_path):
    root = _sounds(tmp_path / "sounds", per_class=16)
    samples = load(root)[0].element_spec[0].shape[1]
    model = zoo.audio_model("resnet_tiny", num_classes=3, sample_rate=RATE, samples=samples, pretrained=False)
    result = zoo.finetune(model, root, recipe="full", epochs=8, batch_size=8, learning_rate=3e-3, verbose=0,
                          patience=None)
    assert result.metrics["test_accuracy"] >= 0.8  # 5 test clips of 3 classes; chance is a third


@pytest.mark.parametrize("kwargs, message", [({"channels": 2}, "2 channels"), ({"width": 1}, "8-bit")])
def test_stereo_and_8_bit_wavs_are_refused(tmp_path, kwargs, message):
    root = _sounds(tmp_path, per_class=2)
    _write(root / "tone" / "bad.wav", np.zeros(800), **kwargs)
    with pytest.raises(DataError, match=message):
        load(root)


def test_mixed_sample_rates_and_image_models_are_refused(tmp_path):
    root = _sounds(tmp_path, per_class=2)
    with pytest.raises(InvalidArgumentError, match="spectrogram front end"):
        load(root, model=zoo.create_model("resnet_tiny", pretrained=False, num_classes=3))
    _write(root / "tone" / "fast.wav", np.zeros(800), rate=16000)
    with pytest.raises(DataError, match="mixes sample rates"):
        load(root)
