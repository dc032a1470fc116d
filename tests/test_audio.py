"""Sounds: .wav folders in zoo.data.load, the log-mel front end before a catalog CNN, fine-tuning on synthesised
tones, chirps and noise, and the wav files that are refused."""
import logging
import wave
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo
from zoo.audio import WHISPER_RATE, WhisperLogMel
from zoo.data import load
from zoo.errors import DataError, InvalidArgumentError
from zoo.training.groups import freeze, groups, unfreeze

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


def _frames(path: Path) -> int:
    with wave.open(str(path)) as f:
        return f.getnframes()


def _sounds(root: Path, per_class: int = 12, rate: int = RATE) -> Path:
    """Three classes a spectrogram tells apart: a steady tone, a rising chirp, white noise (random pitch, phase,
    loudness and length for each clip)."""
    rng = np.random.default_rng(0)
    for i in range(per_class):
        n = int(rate * SECONDS * rng.uniform(0.7, 1.0))
        t = np.arange(n) / rate
        loud = rng.uniform(0.2, 0.8)
        tone = np.sin(2 * np.pi * rng.uniform(300, 1500) * t + rng.uniform(0, 6))
        _write(root / "tone" / f"{i}.wav", loud * tone, rate=rate)
        start, stop = rng.uniform(200, 500), rng.uniform(2000, 3500)
        phase = 2 * np.pi * (start * t + (stop - start) * t ** 2 / (2 * SECONDS))
        _write(root / "chirp" / f"{i}.wav", loud * np.sin(phase), rate=rate)
        _write(root / "noise" / f"{i}.wav", loud * rng.uniform(-1, 1, n), rate=rate)
    return root


def test_a_wav_folder_loads_as_padded_waveforms(tmp_path):
    root = _sounds(tmp_path)
    train, val, test, info = load(root, batch_size=4, val_fraction=0, test_fraction=0, shuffle=False)
    assert info.modality == "audio" and info.sample_rate == RATE and info.class_names == ("chirp", "noise", "tone")
    lengths = [_frames(path) for path in root.rglob("*.wav")]
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
    keras.utils.set_random_seed(0)  # its accuracy does not depend on the tests before it
    model = zoo.audio_model("resnet_tiny", num_classes=3, sample_rate=RATE, samples=samples, pretrained=False)
    result = zoo.finetune(model, root, recipe="full", epochs=5, batch_size=8, learning_rate=3e-3, verbose=0,
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


def _whisper_params(layers: int, width: int, mels: int = 80, positions: int = 1500) -> int:
    """Whisper's encoder, counted from its architecture (Radford et al. 2022, figure 1; openai/whisper model.py): two
    3-wide convolutions, a sinusoidal position table, pre-norm blocks (the key projection has no bias), a last norm."""
    convs = (3 * mels * width + width) + (3 * width * width + width)
    block = (4 * width * width + 3 * width) + 2 * (2 * width) + (width * 4 * width + 4 * width) + (4 * width * width
                                                                                                    + width)
    return convs + positions * width + layers * block + 2 * width


def test_whisper_entries_are_the_published_encoders():
    model = zoo.create_model("whisper_tiny", pretrained=False, input_shape=(16000,))
    assert model.get_layer("backbone").count_params() == _whisper_params(4, 384) == 8_208_384
    assert tuple(model.input.shape) == (None, 16000) and tuple(model.output.shape) == (None, 384)
    assert zoo.model_info("whisper_small.multi")["weights"]["url"] == "kaggle://keras/whisper/keras/whisper_small_multi/4"


def _chirp(seconds: float, rate: int = WHISPER_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t ** 2))).astype("float32")


def test_whisper_log_mel_equals_keras_hubs_audio_converter():
    import keras_hub

    waves = np.stack([_chirp(1.0), np.random.default_rng(0).uniform(-0.3, 0.3, WHISPER_RATE).astype("float32")])
    reference = np.asarray(keras_hub.layers.WhisperAudioConverter(max_audio_length=1)(waves))
    ours = np.asarray(WhisperLogMel()(waves))
    assert ours.shape == reference.shape == (2, 100, 80)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.fixture(scope="module")
def whisper_preset(tmp_path_factory) -> Path:
    """A keras-hub preset of a small random Whisper, as keras-hub writes one."""
    import keras_hub

    backbone = keras_hub.models.WhisperBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=32,
                                                intermediate_dim=128, max_encoder_sequence_length=200,
                                                max_decoder_sequence_length=16)
    directory = tmp_path_factory.mktemp("whisper") / "whisper_micro"
    backbone.save_to_preset(str(directory))
    return directory


def test_a_whisper_preset_loads_its_encoder_and_takes_waveforms(whisper_preset, tmp_path):
    import keras_hub

    model = zoo.create_model(str(whisper_preset), input_shape=(WHISPER_RATE,))  # 1 s: 100 frames, 50 positions
    reference = keras_hub.models.Backbone.from_preset(str(whisper_preset))
    waves = np.stack([_chirp(1.0), _chirp(1.0)[::-1].copy()])
    features = np.asarray(keras_hub.layers.WhisperAudioConverter(max_audio_length=1)(waves))
    tokens = reference({"encoder_features": features, "decoder_token_ids": np.zeros((2, 1), "int32"),
                        "decoder_padding_mask": np.ones((2, 1), "int32")})["encoder_sequence_output"]
    expected = np.asarray(tokens).mean(axis=1)  # transformers' WhisperForAudioClassification pools so
    np.testing.assert_allclose(model.predict(waves, verbose=0), expected, atol=1e-4)
    assert model.get_layer("backbone").count_params() == _whisper_params(2, 32, positions=100)
    path = tmp_path / "whisper.keras"
    model.save(path)
    np.testing.assert_allclose(zoo.load_model(path).predict(waves, verbose=0), expected, atol=1e-4)


def test_a_clip_longer_than_whispers_position_table_is_cut_and_said(whisper_preset, caplog):
    with caplog.at_level(logging.WARNING, logger="zoo.factory"):
        model = zoo.create_model(str(whisper_preset), input_shape=(3 * WHISPER_RATE,))  # the table holds 2 s
    assert tuple(model.input.shape) == (None, 2 * WHISPER_RATE)
    assert sum("position table" in r.message for r in caplog.records) == 1


def test_whisper_groups_are_its_embeddings_and_each_encoder_layer(whisper_preset):
    model = zoo.create_model(str(whisper_preset), num_classes=3, input_shape=(WHISPER_RATE // 4,))
    found = groups(model)
    assert [g.name for g in found] == ["stage1", "stage2", "stage3", "head"]
    assert {layer.name for layer in found[0].layers} >= {"encoder_token_embedding_conv_layer_1",
                                                         "encoder_position_embedding"}
    freeze(model)
    unfreeze(model, blocks=1)
    body = model.get_layer("backbone")
    trainable = {name for name in ("encoder_token_embedding_conv_layer_1", "transformer_encoder_layer_0",
                                   "transformer_encoder_layer_1") if body.get_layer(name).trainable_weights}
    assert trainable == {"transformer_encoder_layer_1"} and model.get_layer("head").trainable_weights
    adapted = zoo.create_model(str(whisper_preset), num_classes=3, input_shape=(WHISPER_RATE // 4,))
    zoo.apply_lora(adapted)
    lora = {v.path.rsplit("/", 1)[0] for v in adapted.trainable_weights if "lora" in v.path}
    assert lora == {f"transformer_encoder_layer_{i}/self_attention_layer/{name}" for i in (0, 1)
                    for name in ("query", "value")}  # LoRA's default: the attention's query and value


def test_whisper_fine_tunes_on_sounds_padded_to_its_input(whisper_preset, tmp_path, caplog):
    root = _sounds(tmp_path / "sounds", per_class=12, rate=WHISPER_RATE)  # clips of 0.35 to 0.5 s
    keras.utils.set_random_seed(0)
    model = zoo.create_model(str(whisper_preset), num_classes=3, pretrained=False, input_shape=(WHISPER_RATE // 2,))
    result = zoo.finetune(model, root, recipe="full", epochs=10, batch_size=8, learning_rate=3e-3, verbose=0,
                          patience=None)
    assert result.metrics["test_accuracy"] >= 0.75  # 4 test clips of 3 classes; chance is a third
    short = zoo.create_model(str(whisper_preset), num_classes=3, pretrained=False, input_shape=(WHISPER_RATE // 4,))
    with caplog.at_level(logging.WARNING, logger="zoo.data"):
        train = load(root, model=short)[0]
    assert sum("longer clips are cut" in r.message for r in caplog.records) == 1  # 0.25 s of up to 0.5 s
    assert tuple(next(iter(train))[0].shape[1:]) == (WHISPER_RATE // 4,)
    with pytest.raises(DataError, match="resample"):
        load(_sounds(tmp_path / "slow", per_class=2), model=model)  # 8 kHz clips for a 16 kHz model


def test_a_sound_job_on_the_command_line_predicts_wav_files(tmp_path, capsys):
    from zoo.cli import main

    root, run = _sounds(tmp_path / "sounds", per_class=6, rate=WHISPER_RATE), tmp_path / "run"
    assert main(["finetune", "--model", "whisper_tiny", "--pretrained", "false", "--data", str(root), "--recipe",
                 "full", "--epochs", "1", "--run-dir", str(run)]) == 0
    model = zoo.load_model(run / "model.keras")
    longest = max(_frames(f) for f in root.rglob("*.wav"))
    assert tuple(model.input.shape) == (None, longest)  # the data's clips, whole
    capsys.readouterr()
    assert main(["predict", str(run), str(root / "tone" / "0.wav"), "--top", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{root / 'tone' / '0.wav'}: ") and line.count(",") == 1
    _write(tmp_path / "slow.wav", np.zeros(800), rate=8000)
    assert main(["predict", str(run), str(tmp_path / "slow.wav")]) == 2
    assert "resample" in capsys.readouterr().err
