"""Text models: a keras-hub encoder (BERT, DistilBERT, RoBERTa, DeBERTa-v3) with its tokenizer inside, so that
raw strings go in, as raw images go into the vision models.

A checkpoint (a keras-hub preset, or a transformers directory) brings its own tokenizer, which keras-hub reads
(``TextClassifierPreprocessor.from_preset``); a model built with random weights has no vocabulary and takes
keras-hub's input dictionary (``token_ids``, ``padding_mask``, ``segment_ids`` where the family has them).

Example:
    >>> model = zoo.create_model("bert_tiny.uncased", num_classes=4)
    >>> model.predict(tf.constant(["an example sentence"])).shape
    (1, 4)
"""
from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from applications.layers import TokenPooling
from zoo.errors import InvalidArgumentError

POOLINGS = ("token", "avg", "none")  # the family's pooled (CLS) output, the masked mean of the tokens, the tokens


def build(input_shape: tuple[int], *, config: dict, checkpoint: str | Path | None = None,
          pooling: str = "token") -> keras.Model:
    """A keras-hub text encoder: random weights from ``config``, or ``checkpoint``'s, ending in ``pooling``.

    ``input_shape`` is ``(sequence_length,)``; the encoder itself takes any length up to its position table.
    Its output is one tensor: ``(batch, hidden)`` for "token" and "avg", ``(batch, length, hidden)`` for "none".
    """
    from zoo.hub import from_preset

    if pooling not in POOLINGS:
        raise InvalidArgumentError(f"pooling='{pooling}' is not one for text: use one of {', '.join(POOLINGS)}")
    if checkpoint is not None:
        from zoo.hub_config import read_config

        config = read_config(checkpoint)
    body = from_preset(config, checkpoint, {})
    hub_config = keras.saving.serialize_keras_object(body)
    inputs = dict(body.input)
    outputs = body.output if isinstance(body.output, dict) else {"sequence_output": body.output}
    tokens = outputs["sequence_output"]
    if pooling == "token":
        pooled = outputs.get("pooled_output")
        pooled = pooled if pooled is not None else TokenPooling(name="class_token")(tokens)
    elif pooling == "avg":
        pooled = MaskedMean(name="masked_mean")(tokens, inputs["padding_mask"])
    else:
        pooled = tokens
    encoder = keras.Model(inputs, pooled, name=body.name)
    encoder.hub_config = hub_config
    encoder.max_length = max_length(hub_config)
    return encoder


def max_length(hub_config: dict) -> int | None:
    """The longest sequence an encoder's position table holds (its ``max_sequence_length``)."""
    return hub_config.get("config", {}).get("max_sequence_length")


def model_inputs(body: keras.Model, checkpoint, length: int, include_preprocessing: bool):
    """The inputs of a text model and what goes into its encoder: strings through the checkpoint's tokenizer, or
    keras-hub's input dictionary of ``length`` tokens (no vocabulary, or ``include_preprocessing=False``)."""
    if include_preprocessing and checkpoint is not None:
        texts = keras.Input((), dtype="string", name="text")
        return texts, tokenizer(checkpoint, length)(texts)
    inputs = {name: keras.Input((length,), dtype=tensor.dtype, name=name) for name, tensor in body.input.items()}
    return inputs, inputs


def tokenizer(checkpoint: str | Path, sequence_length: int) -> keras.layers.Layer:
    """The checkpoint's own tokenizer and packer (``[CLS] ... [SEP]``, padded to ``sequence_length``), as a layer
    that takes a batch of strings."""
    import keras_hub

    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(str(checkpoint),
                                                                               sequence_length=sequence_length)
    except (ValueError, FileNotFoundError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InvalidArgumentError(f"{checkpoint} has no tokenizer keras-hub reads ({first}): give the checkpoint "
                                   f"with its vocabulary files, or include_preprocessing=False to feed token ids"
                                   ) from e
    return TextPreprocessing(preprocessor, name="tokenizer")


@keras.saving.register_keras_serializable(package="keras_zoo")
class TextPreprocessing(keras.layers.Layer):
    """Strings in, keras-hub's input dictionary out: a keras-hub ``TextClassifierPreprocessor`` inside a model.

    The vocabulary is the preprocessor's asset, which Keras restores only after it has rebuilt the model's graph;
    so this layer states its output itself (``outputs``: name to dtype) instead of running the tokenizer on a
    symbolic input, and a saved model loads back.

    Example:
        >>> layer = TextPreprocessing(keras_hub.models.BertTextClassifierPreprocessor.from_preset(DIR))
        >>> layer(tf.constant(["a sentence"]))["token_ids"].shape
        TensorShape([1, 128])
    """

    def __init__(self, preprocessor, outputs: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor
        if outputs is None:
            outputs = {name: value.dtype.name for name, value in preprocessor(tf.constant([""])).items()}
        self.outputs = dict(outputs)
        self.supports_jit = False  # string ops: XLA cannot compile them

    @property
    def sequence_length(self) -> int:
        return int(self.preprocessor.sequence_length)

    def build(self, input_shape):
        self.built = True

    def call(self, texts):
        return self._tokenize(texts)

    # Traced once a layer, not in each of the train, test and predict steps (0.3 to 0.6 s each for BERT's
    # tokenizer and packer: a 2-epoch fine-tune of bert_tiny took 10.4 s, now 8.8): they call the traced function.
    @tf.function(reduce_retracing=True)
    def _tokenize(self, texts):
        return self.preprocessor(texts)

    def compute_output_spec(self, texts):
        return {name: keras.KerasTensor((texts.shape[0], self.sequence_length), dtype=dtype)
                for name, dtype in self.outputs.items()}

    def get_config(self) -> dict:
        return {**super().get_config(), "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "outputs": self.outputs}


@keras.saving.register_keras_serializable(package="keras_zoo")
class MaskedMean(keras.layers.Layer):
    """The mean of the tokens a padding mask keeps (sentence-transformers' mean pooling).

    Example:
        >>> MaskedMean()(np.ones((1, 3, 2)), np.array([[1, 1, 0]])).shape
        TensorShape([1, 2])
    """

    def call(self, tokens, mask):
        mask = keras.ops.expand_dims(keras.ops.cast(mask, tokens.dtype), -1)
        return keras.ops.sum(tokens * mask, axis=1) / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, tokens_shape, mask_shape=None):
        return (tokens_shape[0], tokens_shape[-1])
