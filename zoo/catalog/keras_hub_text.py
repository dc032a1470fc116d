"""Text encoders built through keras-hub, as data: BERT, MiniLM, DistilBERT, RoBERTa, DeBERTa-v3.

Each entry carries its backbone's configuration (keras-hub's own ``config.json`` for keras-hub presets, the
transformers one for a Hugging Face checkpoint), so ``create_model(arch, pretrained=False)`` builds offline with
random weights. A checkpoint's tokenizer files are listed with its weights (``files``): the weights store fetches
them together, and the model takes raw strings. Kaggle handles name a version, so they are pinned by themselves.
"""
from zoo.catalog.keras_hub import hub_weights_file
from zoo.registry import ModelSpec, WeightSpec, register

# sha256 of the bundled bert_tiny_pydoc/model.weights.h5
PYDOC_HASH = "ed3dee1ac507e0a85efb39e2e3cba947105090b03cc14b4af975901ac88b4eff"
SEQUENCE_LENGTH = 128  # tokens a text model reads by default (BERT's fine-tuning length); input_shape=(n,) changes it
WORDPIECE = ("tokenizer.json", "assets/tokenizer/vocabulary.txt")  # a keras-hub preset's tokenizer files
BPE = ("tokenizer.json", "assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt")
SENTENCEPIECE = ("tokenizer.json", "assets/tokenizer/vocabulary.spm")
TRANSFORMERS_WORDPIECE = ("vocab.txt", "tokenizer_config.json")  # a transformers checkpoint's
# The text architectures a checkpoint's config.json may name (transformers' model_type, keras-hub's class) that
# keras-hub 0.32 converts, and the catalog family of each.
TEXT_KINDS = {"bert": "bert", "distilbert": "distilbert", "roberta": "roberta", "xlm-roberta": "roberta",
              "keras_hub>BertBackbone": "bert", "keras_hub>DistilBertBackbone": "distilbert",
              "keras_hub>RobertaBackbone": "roberta", "keras_hub>DebertaV3Backbone": "deberta_v3"}


def hub_config(family: str, cls: str, **config) -> dict:
    """keras-hub's ``config.json`` of a backbone class (``BertBackbone``) with these constructor arguments."""
    return {"module": f"keras_hub.src.models.{family}.{family}_backbone", "class_name": cls, "config": config,
            "registered_name": f"keras_hub>{cls}"}


def text_stages(config: dict) -> dict[int, str]:
    """The groups of a keras-hub text encoder, as stages: the embeddings (0), then each encoder layer (1..L)."""
    inner = config.get("config", config)
    layers = inner.get("num_layers", inner.get("num_hidden_layers", inner.get("n_layers")))
    block = "disentangled_attention_encoder_layer" if "Deberta" in config.get("class_name", "") \
        else "transformer_layer"
    return {0: "embeddings_dropout", **{i + 1: f"{block}_{i}" for i in range(int(layers))}}


def _bert(layers: int, hidden: int, heads: int, vocabulary: int = 30522) -> dict:
    return hub_config("bert", "BertBackbone", vocabulary_size=vocabulary, num_layers=layers, num_heads=heads,
                      hidden_dim=hidden, intermediate_dim=4 * hidden, max_sequence_length=512, num_segments=2)


def _entry(arch: str, family: str, config: dict, tag: str, handle: str, *, files: tuple[str, ...], dataset: str,
           license: str, pooling: str = "token", description: str = "", more: tuple[WeightSpec, ...] = ()) -> None:
    """One architecture and its hub checkpoint; ``more``: further weights of it (the bundled ``pydoc``)."""
    weight = WeightSpec(tag=tag, file_name=hub_weights_file(handle), url=handle, dataset=dataset, license=license,
                        cache_subdir=f"hub/{arch}.{tag}", files=files)
    register(text_spec(arch, family, config, pooling=pooling, description=description, weights=(weight, *more)))


def text_spec(arch: str, family: str, config: dict, *, pooling: str = "token", description: str = "",
              weights: tuple[WeightSpec, ...] = ()) -> ModelSpec:
    """The entry of a keras-hub text encoder described by ``config`` (a catalog entry's, or a checkpoint's)."""
    return ModelSpec(arch=arch, family=family, source="keras-hub", builder="zoo.language:build",
                     builder_kwargs={"config": config}, input_size=(SEQUENCE_LENGTH,), preprocessing="builtin",
                     pooling=pooling, stages=text_stages(config), min_input_size=2, modality="text",
                     description=description, weights=weights)


BOOKS_WIKI = dict(dataset="BooksCorpus and English Wikipedia (masked language modelling)",
                  license="Apache-2.0 (google-research/bert)")
# The package's own: BERT-tiny's shape with a 4,096-piece vocabulary, pretrained by masked language modelling on
# the pretraining half of the standard library's docstrings (zoo.corpus) by `keras-zoo pretrain --method mlm`.
PYDOC = WeightSpec(tag="pydoc", file_name="bert_tiny_pydoc/model.weights.h5", bundled=True, files=WORDPIECE,
                   file_hash=PYDOC_HASH, dataset="Python standard library docstrings, pretraining half (masked "
                   "language modelling)", license="PSF-2.0 (the docstrings); Apache-2.0 (the weights, keras-zoo)",
                   description="keras-zoo pretrain --method mlm")
for _arch, (_layers, _hidden, _heads) in {"bert_tiny": (2, 128, 2), "bert_small": (4, 512, 8),
                                          "bert_base": (12, 768, 12)}.items():
    _entry(_arch, "bert", _bert(_layers, _hidden, _heads), "uncased",
           f"kaggle://keras/bert/keras/{_arch}_en_uncased/3", files=WORDPIECE, **BOOKS_WIKI,
           description=f"BERT L-{_layers} H-{_hidden} (Devlin et al. 2019; Turc et al. 2019), uncased",
           more=(PYDOC,) if _arch == "bert_tiny" else ())
_entry("bert_mini", "bert", {"model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "intermediate_size": 1024, "max_position_embeddings": 512,
                             "type_vocab_size": 2}, "uncased", "hf://google/bert_uncased_L-4_H-256_A-4",
       files=TRANSFORMERS_WORDPIECE, **BOOKS_WIKI,
       description="BERT L-4 H-256 (Turc et al. 2019), uncased. keras-hub has no preset of this size, so the weights "
                   "are Google's transformers checkpoint; keras-hub reads only its model.safetensors: where the hub "
                   "has none, save it with transformers (save_pretrained) and `keras-zoo weights import DIR`")
_entry("minilm_l6", "bert", _bert(6, 384, 12), "sentence", "kaggle://keras/sentence-transformers/keras/"
       "all_minilm_l6_v2_en/1", files=WORDPIECE, pooling="avg",
       dataset="1B sentence pairs (sentence-transformers' contrastive fine-tune of MiniLM)",
       license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
       description="all-MiniLM-L6-v2 sentence embeddings (Reimers and Gurevych 2019), mean pooling")
_entry("distilbert_base", "distilbert",
       hub_config("distil_bert", "DistilBertBackbone", vocabulary_size=30522, num_layers=6, num_heads=12,
                  hidden_dim=768, intermediate_dim=3072, max_sequence_length=512), "uncased",
       "kaggle://keras/distil_bert/keras/distil_bert_base_en_uncased/3", files=WORDPIECE,
       dataset="BooksCorpus and English Wikipedia (distilled from BERT-base)",
       license="Apache-2.0 (huggingface/transformers)", description="DistilBERT (Sanh et al. 2019), uncased")
_entry("roberta_base", "roberta",
       hub_config("roberta", "RobertaBackbone", vocabulary_size=50265, num_layers=12, num_heads=12, hidden_dim=768,
                  intermediate_dim=3072, max_sequence_length=512), "en",
       "kaggle://keras/roberta/keras/roberta_base_en/3", files=BPE,
       dataset="160 GB of English text (BooksCorpus, Wikipedia, CC-News, OpenWebText, Stories)",
       license="MIT (facebookresearch/fairseq)", description="RoBERTa base (Liu et al. 2019)")
_entry("deberta_v3_small", "deberta_v3",
       hub_config("deberta_v3", "DebertaV3Backbone", vocabulary_size=128100, num_layers=6, num_heads=12,
                  hidden_dim=768, intermediate_dim=3072, max_sequence_length=512, bucket_size=256), "en",
       "kaggle://keras/deberta_v3/keras/deberta_v3_small_en/3", files=SENTENCEPIECE,
       dataset="160 GB of English text (replaced-token detection)", license="MIT (microsoft/DeBERTa)",
       description="DeBERTa-v3 small (He et al. 2021)")
