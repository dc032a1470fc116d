"""Audio sources for ``zoo.data.load``: a folder of class sub-folders of ``.wav`` files (16-bit PCM, mono, one
sample rate), read with the standard library's ``wave`` module into float32 waveforms in [-1, 1], each padded with
silence (or cut) to the longest clip.

Example:
    >>> train, val, test, info = zoo.data.load("path/to/sounds")
    >>> info.modality, info.sample_rate
    ('audio', 16000)
"""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from zoo.errors import DataError

SUFFIX = ".wav"


def is_audio_folder(root: Path) -> bool:
    """Whether a folder of class sub-folders holds sounds: most of its files are ``.wav``."""
    files = [f for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") for f in d.rglob("*")
             if f.is_file()]
    return sum(f.suffix.lower() == SUFFIX for f in files) * 2 > len(files)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples in [-1, 1] as float32, sample rate) of a 16-bit mono PCM ``.wav`` file; anything else is refused
    with what to do."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            data = f.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise DataError(f"{path} is not a PCM .wav file ({e}): convert it, e.g. `sox IN -b 16 -c 1 {path.name}`"
                        ) from e
    if channels != 1:
        raise DataError(f"{path} has {channels} channels: give mono sound, e.g. `sox IN -c 1 {path.name}`")
    if width != 2:
        raise DataError(f"{path} has {8 * width}-bit samples: give 16-bit PCM, e.g. `sox IN -b 16 {path.name}`")
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, rate


def read_clip(path: Path, model) -> np.ndarray:
    """One ``.wav`` file as ``model``'s input: checked to be at the model's rate, then padded with silence or cut to
    the model's samples."""
    waves, found = read_wav(path)
    check_rate(str(path), found, model)
    samples = model.inputs[0].shape[1]
    return np.pad(waves[:samples], (0, max(samples - len(waves), 0)))


def check_rate(what: str, found: int, model) -> None:
    """Refuse sound sampled at ``found`` Hz (``what``: a file or folder) for a model whose front end takes another
    rate."""
    rate = model_rate(model)
    if rate is not None and rate != found:
        raise DataError(f"{what} is sampled at {found} Hz but {model.name} takes {rate} Hz: resample it, e.g. "
                        f"`sox IN -r {rate} OUT.wav`, or build the model for {found} Hz")


def model_rate(model) -> int | None:
    """The sample rate a sound model's front end takes (its layer with a ``sampling_rate``), or None."""
    return next((layer.sampling_rate for layer in model.layers if hasattr(layer, "sampling_rate")), None)


def read_folder(root: Path) -> tuple[np.ndarray, list[str], list[str], int]:
    """(waveforms (n, samples), class names, label names, sample rate) of a folder of class sub-folders."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root} holds {len(classes)} class folder(s): put each class's .wav files in a sub-folder "
                        f"of its own (at least two classes)")
    waves, labels, rates = [], [], {}
    for name in classes:
        files = sorted(f for f in (root / name).rglob(f"*{SUFFIX}") if f.is_file())
        if not files:
            raise DataError(f"class folder {root / name} holds no .wav files: add some or remove the folder")
        for f in files:
            samples, rate = read_wav(f)
            rates.setdefault(rate, f)
            waves.append(samples)
            labels.append(name)
    if len(rates) > 1:
        (a, first), (b, other) = list(rates.items())[:2]
        raise DataError(f"{root} mixes sample rates ({first} at {a} Hz, {other} at {b} Hz): resample them to one, "
                        f"e.g. `sox IN -r {a} OUT`")
    length = max(len(w) for w in waves)
    batch = np.zeros((len(waves), length), np.float32)
    for i, w in enumerate(waves):
        batch[i, :len(w)] = w
    return batch, classes, labels, next(iter(rates))
