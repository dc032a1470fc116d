"""Measure every catalog architecture at its default input size: the parameters of its backbone and the GFLOPs
of one image through it (TensorFlow's profiler on the traced graph; a multiply-add counts as two FLOPs), into
zoo/catalog/measured.json, which ``keras-zoo list`` and ``info`` read without TensorFlow.

Run from the project root: ``python scripts/measure_catalog.py`` (all: about 20 minutes on 2 cores), or
``python scripts/measure_catalog.py resnet50 dinov2_small`` to refresh some. Random weights: nothing is
downloaded.
"""
import json
import sys
from pathlib import Path

import keras
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import zoo  # noqa: E402
from zoo.registry import MEASURED, measured_key, specs  # noqa: E402


def gflops(model) -> float:
    """GFLOPs of one forward pass of ``model`` on one input (inference mode): an image, or a text model's token ids
    at its sequence length."""
    forward = tf.function(lambda x: model(x, training=False))
    inputs = model.input if isinstance(model.input, dict) else None
    spec = {name: tf.TensorSpec((1, *t.shape[1:]), t.dtype) for name, t in inputs.items()} if inputs else \
        tf.TensorSpec((1, *model.input.shape[1:]), tf.float32)
    graph = forward.get_concrete_function(spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                            options=options)
    return profile.total_float_ops / 1e9


def measure(spec) -> dict:
    """The backbone's parameters and the GFLOPs of the pooled model at the entry's default size (a text encoder
    with its pooler, as its publisher counts it)."""
    name = f"{spec.arch}.{spec.weights[0].tag}" if spec.weights else spec.arch
    pooler = {"pooling": "token"} if spec.modality == "text" else {}
    model = zoo.create_model(name, pretrained=False, **pooler)  # the backbone and its pooling: no head
    return {"params": int(model.get_layer("backbone").count_params()), "gflops": round(gflops(model), 3)}


def main(archs: list[str]) -> int:
    found = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
    for spec in specs():
        if archs and spec.arch not in archs:
            continue
        found[measured_key(spec)] = measure(spec)
        print(measured_key(spec), found[measured_key(spec)], flush=True)
        MEASURED.write_text(json.dumps(dict(sorted(found.items())), indent=1) + "\n")  # kept after each one
        keras.backend.clear_session()  # one model at a time in memory
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
