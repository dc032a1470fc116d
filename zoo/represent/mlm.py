"""Masked-language-model pretraining (Devlin et al. 2019): a WordPiece vocabulary learned from the corpus, then a
small BERT that recovers masked tokens, with keras-hub's own parts (``compute_word_piece_vocabulary``,
``BertMaskedLMPreprocessor``, ``BertMaskedLM``). The result is a keras-hub preset directory (backbone and
tokenizer) that ``zoo.create_model(DIR)`` builds with its tokenizer inside: the bundled ``bert_tiny.pydoc`` is
``pretrain_mlm(zoo.corpus.pretraining(), OUT)``.

Example:
    >>> path, summary = pretrain_mlm(texts, "my_bert", epochs=4)
    >>> model = zoo.create_model("my_bert", num_classes=3)
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from zoo.errors import InvalidArgumentError
from zoo.files import atomic_save

log = logging.getLogger(__name__)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's; [PAD] is id 0, as the padding mask needs


def pretrain_mlm(texts: list[str], out: str | Path, *, vocabulary_size: int = 4096, num_layers: int = 2,
                 hidden_dim: int = 128, num_heads: int = 2, sequence_length: int = 128, epochs: int = 12,
                 batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0) -> tuple[Path, dict]:
    """Learn a WordPiece vocabulary (lowercased, accents stripped) and pretrain a BERT on ``texts`` with masked
    language modelling (15% of tokens chosen, BERT's 80/10/10 replacement); write backbone and tokenizer as a
    keras-hub preset directory ``out``. The default size is BERT-tiny's (2 layers, width 128, 2 heads) with a
    smaller vocabulary. Returns ``(out, summary)``: the masked-token accuracy of the last epoch, the seconds."""
    import keras
    import keras_hub
    import tensorflow as tf

    out = Path(out)
    if out.exists():
        raise InvalidArgumentError(f"{out} exists: remove it first, or give another --out")
    if len(texts) < batch_size:
        raise InvalidArgumentError(f"{len(texts)} texts are fewer than one batch of {batch_size}: give more text")
    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    corpus = tf.data.Dataset.from_tensor_slices(list(texts))
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        corpus.batch(1024), vocabulary_size, lowercase=True, strip_accents=True, reserved_tokens=SPECIAL)
    # whitespace pieces (" ", "## ") are never produced (the text is split on whitespace): tf-text warns of them
    vocabulary = [piece for piece in vocabulary if piece.strip() not in ("", "##")]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim, max_sequence_length=sequence_length)
    preprocessor = keras_hub.models.BertMaskedLMPreprocessor(tokenizer, sequence_length=sequence_length,
                                                             mask_selection_length=max(1, sequence_length // 5))
    task = keras_hub.models.BertMaskedLM(backbone, preprocessor=preprocessor)
    steps = epochs * -(-len(texts) // batch_size)
    rate = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_target=learning_rate,
                                                  warmup_steps=max(1, steps // 10))
    task.compile(optimizer=keras.optimizers.AdamW(rate, weight_decay=0.01),
                 weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    data = corpus.shuffle(len(texts), seed=seed).batch(batch_size)
    history = task.fit(data, epochs=epochs, verbose=0).history
    summary = {"texts": len(texts), "vocabulary": len(vocabulary), "parameters": int(backbone.count_params()),
               "masked_accuracy": round(float(history["accuracy"][-1]), 4),
               "loss": round(float(history["loss"][-1]), 4), "seconds": round(time.monotonic() - started, 1)}
    log.info("masked-language-model pretraining: %s", summary)

    def save(directory: Path) -> None:
        backbone.save_to_preset(str(directory))
        tokenizer.save_to_preset(str(directory))

    atomic_save(out, save)  # a whole preset or nothing
    return out, summary
