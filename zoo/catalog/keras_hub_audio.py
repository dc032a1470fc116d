"""Speech encoders built through keras-hub, as data: Whisper's encoder (Radford et al. 2022).

Each entry carries keras-hub's ``WhisperBackbone`` configuration, so ``create_model(arch, pretrained=False)`` builds
offline with random weights; its tags are keras-hub's presets (Kaggle handles name a version, so they are pinned by
themselves): ``en`` trained on English speech, ``multi`` on 97 languages. Only the encoder is kept; a model takes
16 kHz waveforms, 30 s by default (Whisper's window), any length up to that with ``input_shape=(samples,)``.
"""
from zoo.catalog.keras_hub import hub_weights_file
from zoo.catalog.keras_hub_text import hub_config
from zoo.registry import ModelSpec, WeightSpec, register

WINDOW = 480_000  # samples Whisper reads at once: 30 s at 16 kHz (its encoder's 1,500 positions, 2 frames each)
LEAST = 1_600  # samples a clip needs at least: 0.1 s, ten frames
# keras-hub's Whisper backbone class, and the catalog family of a checkpoint whose config.json names it
AUDIO_KINDS = {"keras_hub>WhisperBackbone": "whisper"}
LICENSE = "MIT (openai/whisper)"
DATASETS = {"en": "438,000 h of English speech from the web (weakly supervised)",
            "multi": "680,000 h of speech in 97 languages from the web (weakly supervised)"}


def whisper_config(layers: int, hidden: int, heads: int, vocabulary: int = 51864) -> dict:
    """keras-hub's ``WhisperBackbone`` config at one size (the English-only vocabulary; the encoder ignores it)."""
    return hub_config("whisper", "WhisperBackbone", vocabulary_size=vocabulary, num_layers=layers, num_heads=heads,
                      hidden_dim=hidden, intermediate_dim=4 * hidden, num_mels=80, dropout=0.0,
                      max_encoder_sequence_length=3000, max_decoder_sequence_length=448)


def audio_spec(arch: str, config: dict, *, description: str = "", weights: tuple[WeightSpec, ...] = ()) -> ModelSpec:
    """The entry of a keras-hub Whisper encoder described by ``config`` (a catalog entry's, or a checkpoint's): its
    groups are the embeddings (0) and each encoder layer (1..L)."""
    layers = config.get("config", config)["num_layers"]
    stages = {0: "encoder_embeddings_dropout", **{i + 1: f"transformer_encoder_layer_{i}" for i in range(layers)}}
    return ModelSpec(arch=arch, family="whisper", source="keras-hub", builder="zoo.audio:build",
                     builder_kwargs={"config": config}, input_size=(WINDOW,), preprocessing="builtin", pooling="avg",
                     stages=stages, min_input_size=LEAST, modality="audio", description=description,
                     weights=weights)


for _arch, (_layers, _hidden, _heads) in {"whisper_tiny": (4, 384, 6), "whisper_base": (6, 512, 8),
                                          "whisper_small": (12, 768, 12)}.items():
    _size = _arch.split("_")[1]
    register(audio_spec(
        _arch, whisper_config(_layers, _hidden, _heads),
        description=f"Whisper {_size}'s encoder (Radford et al. 2022): 80 log-mel bands of 16 kHz speech, "
                    f"{_layers} layers of width {_hidden}; the decoder is left out",
        weights=tuple(WeightSpec(tag=tag, file_name=hub_weights_file(handle), url=handle, dataset=DATASETS[tag],
                                 license=LICENSE, cache_subdir=f"hub/{_arch}.{tag}")
                      for tag in ("en", "multi") for handle in [f"kaggle://keras/whisper/keras/{_arch}_{tag}/4"])))
