"""Write the parity fixtures of tests/test_hub.py: small random-init checkpoints in each library's own format,
an input batch, and what the reference implementation computes on it.

    pip install torch timm transformers safetensors   # for this script only: not dependencies of keras-zoo
    python scripts/make_hub_fixtures.py               # writes tests/fixtures/hub/

Each fixture is a directory as the hub serves it (``config.json`` and ``model.safetensors``, written by the
library itself), plus ``x.npy`` (raw 0-255 images, NHWC) and ``expected.npy`` (the reference's output on
them). The timm ResNet-18's 11.7M weights are not committed: ``weights()`` makes them from a seed, here and
in the test, and the test writes the safetensors file (``manifest.json`` lists the tensors). The text
fixture (BERT) has its own vocabulary and tokenized sentences instead of images: see ``transformers_text_model``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub"
MEAN, STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def weights(manifest: list[list], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic weights for ``[name, shape, dtype]`` tensors: uniform with the fan-in's scale, and for
    BatchNorm positive scales and variances, so that a deep network's features neither vanish nor explode."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in manifest:
        if dtype.startswith("int"):
            out[name] = np.zeros(shape, dtype)
        elif name.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(dtype)
        elif len(shape) == 1:
            out[name] = rng.uniform(-0.1, 0.1, shape).astype(dtype)
        else:
            bound = float(np.sqrt(3.0 / np.prod(shape[1:])))
            out[name] = rng.uniform(-bound, bound, shape).astype(dtype)
    return out


def _images(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")


def _nchw(x: np.ndarray, mean=MEAN, std=STD):
    import torch

    return torch.from_numpy(((x / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())


def _save(directory: Path, x: np.ndarray, expected) -> None:
    np.save(directory / "x.npy", x)
    np.save(directory / "expected.npy", expected.detach().numpy().astype("float32"))
    print(f"{directory.name}: expected {tuple(expected.shape)}")


def timm_model(architecture: str, features: int, size: int = 64, calibrate: bool = False) -> None:
    """A timm CNN, average-pooled features (keras-hub's timm converter). Its weights come from ``weights()``,
    and only their manifest is committed. ``calibrate``: for a deep network without a residual path around
    every block (EfficientNet), seeded BatchNorm statistics make the features vanish, so they are measured on
    random images (as training would) and committed, float16, in ``batchnorm.npz``."""
    import timm
    import torch

    directory = OUT / f"timm_{architecture}"
    directory.mkdir(parents=True, exist_ok=True)
    model = timm.create_model(architecture, pretrained=False, num_classes=0)
    manifest = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights(manifest).items()})
    if calibrate:
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.momentum = None  # a plain average over the calibration batch
                layer.reset_running_stats()
        with torch.no_grad():
            model.train()(_nchw(_images(size, 7)))
        stats = {k: v.numpy().astype("float16") for k, v in model.state_dict().items()
                 if k.endswith(("running_mean", "running_var"))}
        np.savez(directory / "batchnorm.npz", **stats)
        model.load_state_dict({k: torch.from_numpy(v.astype("float32")) for k, v in stats.items()}, strict=False)
    model.eval()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    config = {"architecture": architecture, "num_classes": 0, "num_features": features,
              "pretrained_cfg": {"input_size": [3, size, size], "mean": MEAN.tolist(), "std": STD.tolist()}}
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    x = _images(size, 1)
    with torch.no_grad():
        _save(directory, x, model(_nchw(x)))


def transformers_model(name: str, model_class, config, size: int, mean, std, pooled: bool = False) -> None:
    """A transformers vision model at its own image size: the class token of its base model's last hidden
    state (after the final LayerNorm), or with ``pooled`` its average-pooled output (Swin's)."""
    import torch

    torch.manual_seed(0)
    directory = OUT / name
    model = model_class(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": mean, "image_std": std, "size": {"height": size, "width": size}}))
    x = _images(size, 2)
    with torch.no_grad():
        base = getattr(model, model.base_model_prefix, model)  # ViTForImageClassification.vit, or the model
        out = base(pixel_values=_nchw(x, np.array(mean, "float32"), np.array(std, "float32")))
    _save(directory, x, out.pooler_output if pooled else out.last_hidden_state[:, 0])


SENTENCES = [  # at 16 tokens: the second is truncated, the third fills them, the others are padded
    "Return the sorted list of items.",
    "Return a new list containing all items from the iterable in ascending order, unless a key function is "
    "given to customize the sort order.",
    "Is the zyzzyva's file open?",
    "JSON Parser Raises ValueError",
]


def _stdlib_docstrings() -> list[str]:
    """A real English corpus available offline: the docstrings of standard library modules and of their
    public members, in a fixed order (about 300 KB; it varies a little with the Python version)."""
    import importlib
    import inspect

    modules = ["argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
               "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools",
               "gzip", "hashlib", "heapq", "http.client", "inspect", "io", "itertools", "json", "logging", "math",
               "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "statistics", "string", "subprocess",
               "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid",
               "xml.etree.ElementTree", "zipfile"]
    texts = []
    for name in modules:
        module = importlib.import_module(name)
        members = [m for k, m in sorted(inspect.getmembers(module), key=lambda km: km[0])
                   if not k.startswith("_") and getattr(m, "__module__", None) == name]
        texts += [doc for doc in map(inspect.getdoc, [module] + members) if doc]
    return texts


def transformers_text_model(name: str, config, vocabulary_size: int = 1000, length: int = 16) -> None:
    """A transformers BERT with its own WordPiece vocabulary, trained on standard library docstrings
    (``vocab.txt``, kept if present), and the tokenizer files of ``save_pretrained``. Fixed sentences
    (``sentences.json``) are tokenized by transformers to ``length`` tokens (``token_ids.npy``,
    ``padding_mask.npy``); ``expected.npy`` is the last hidden state, ``pooled.npy`` the pooler output."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertModel, BertTokenizerFast

    directory = OUT / name
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"  # what keras-hub reads (transformers 5 no longer writes it)
    if not vocab_file.exists():  # the trainer breaks ties in hash order, so a rerun keeps the committed one
        trainer = BertWordPieceTokenizer(lowercase=True)
        trainer.train_from_iterator(_stdlib_docstrings(), vocab_size=vocabulary_size, min_frequency=2,
                                    limit_alphabet=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        trainer.save_model(str(directory))
    vocab = {token: i for i, token in enumerate(vocab_file.read_text(encoding="utf-8").rstrip("\n").split("\n"))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    model = BertModel(config(vocab_size=len(tokenizer))).eval()
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "sentences.json").write_text(json.dumps(SENTENCES, indent=1))
    batch = tokenizer(SENTENCES, max_length=length, padding="max_length", truncation=True, return_tensors="pt")
    np.save(directory / "token_ids.npy", batch["input_ids"].numpy().astype("int32"))
    np.save(directory / "padding_mask.npy", batch["attention_mask"].numpy().astype(bool))
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    np.save(directory / "expected.npy", out.last_hidden_state.numpy().astype("float32"))
    np.save(directory / "pooled.npy", out.pooler_output.numpy().astype("float32"))
    print(f"{directory.name}: vocabulary {len(tokenizer)}, expected {tuple(out.last_hidden_state.shape)}")


def main() -> None:
    from functools import partial

    from transformers import (
        BertConfig,
        DeiTConfig,
        DeiTForImageClassificationWithTeacher,
        Dinov2Config,
        Dinov2Model,
        SwinConfig,
        SwinModel,
        ViTConfig,
        ViTForImageClassification,
    )

    timm_model("resnet18", 512)
    timm_model("efficientnet_b0", 1280, calibrate=True)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
    transformers_model("dinov2_tiny", Dinov2Model, Dinov2Config(**small, mlp_ratio=4, patch_size=14, image_size=56),
                       56, MEAN.tolist(), STD.tolist())
    # as google/vit-base-patch16-224 is saved (keras-hub's converter reads the "vit." prefix of a classifier)
    transformers_model("vit_tiny", ViTForImageClassification,
                       ViTConfig(**small, intermediate_size=64, patch_size=8, image_size=32, num_labels=10), 32,
                       [0.5] * 3, [0.5] * 3)
    # as facebook/deit-*-distilled-patch16-224 are saved: a class and a distillation token, two heads
    transformers_model("deit_tiny", DeiTForImageClassificationWithTeacher,
                       DeiTConfig(**small, intermediate_size=64, patch_size=8, image_size=32, num_labels=10), 32,
                       MEAN.tolist(), STD.tolist())
    # as microsoft/swin-*-patch4-window7-224: two stages, windows shifted in each stage's second block
    transformers_model("swin_tiny", SwinModel,
                       SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                  window_size=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                  drop_path_rate=0.0), 32, MEAN.tolist(), STD.tolist(), pooled=True)
    # as google-bert/bert-base-uncased is saved: a BertModel, its vocab.txt and tokenizer files
    transformers_text_model("bert_tiny", partial(BertConfig, **small, intermediate_size=64,
                                                 max_position_embeddings=64, type_vocab_size=2))


if __name__ == "__main__":
    main()
