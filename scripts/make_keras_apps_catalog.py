"""Regenerate zoo/catalog/keras_apps.py from keras itself.

Run from the project root: ``python scripts/make_keras_apps_catalog.py``.
Weight file names, URLs and hashes come from ../shared/data/keras_applications_weights.json
(read from keras 3.15.1's applications modules); stage layers and the first convolution come
from building each constructor at its default size and reading the layer outputs.
"""
import json
import math
import sys
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from applications.keras_apps import build  # noqa: E402  (the same layer names the factory gets)

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_JSON = ROOT.parent / "shared" / "data" / "keras_applications_weights.json"
OUT = ROOT / "zoo" / "catalog" / "keras_apps.py"

# constructor -> (arch, family, default input size, preprocessing mode, min input size)
ENTRIES = {
    "ResNet50": ("resnet50", "resnet", 224, "caffe", 32),
    "ResNet101": ("resnet101", "resnet", 224, "caffe", 32),
    "ResNet152": ("resnet152", "resnet", 224, "caffe", 32),
    "ResNet50V2": ("resnet50v2", "resnet_v2", 224, "tf", 32),
    "ResNet101V2": ("resnet101v2", "resnet_v2", 224, "tf", 32),
    "ResNet152V2": ("resnet152v2", "resnet_v2", 224, "tf", 32),
    "VGG16": ("vgg16", "vgg", 224, "caffe", 32),
    "VGG19": ("vgg19", "vgg", 224, "caffe", 32),
    "DenseNet121": ("densenet121", "densenet", 224, "torch", 32),
    "DenseNet169": ("densenet169", "densenet", 224, "torch", 32),
    "DenseNet201": ("densenet201", "densenet", 224, "torch", 32),
    "InceptionV3": ("inception_v3", "inception", 299, "tf", 75),
    "InceptionResNetV2": ("inception_resnet_v2", "inception", 299, "tf", 75),
    "Xception": ("xception", "xception", 299, "tf", 71),
    "MobileNet": ("mobilenet", "mobilenet", 224, "tf", 32),
    "MobileNetV2": ("mobilenetv2", "mobilenet", 224, "tf", 32),
    "MobileNetV3Small": ("mobilenetv3_small", "mobilenet_v3", 224, "builtin", 32),
    "MobileNetV3Large": ("mobilenetv3_large", "mobilenet_v3", 224, "builtin", 32),
    "NASNetMobile": ("nasnet_mobile", "nasnet", 224, "tf", 32),
    "NASNetLarge": ("nasnet_large", "nasnet", 331, "tf", 32),
    **{f"EfficientNetB{i}": (f"efficientnet_b{i}", "efficientnet", s, "builtin", 32)
       for i, s in enumerate([224, 240, 260, 300, 380, 456, 528, 600])},
    **{f"EfficientNetV2{k}": (f"efficientnetv2_{k.lower()}", "efficientnet_v2", s, "builtin", 32)
       for k, s in [("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384), ("M", 480), ("L", 480)]},
    **{f"ConvNeXt{k}": (f"convnext_{k.lower()}", "convnext", 224, "builtin", 32)
       for k in ["Tiny", "Small", "Base", "Large", "XLarge"]},
}

LICENSES = {
    "resnet": "MIT (weights ported from Kaiming He's release)",
    "vgg": "CC BY 4.0 (weights from the Visual Geometry Group, Oxford)",
    "densenet": "BSD-3-Clause (weights ported from the DenseNet authors)",
}
DEFAULT_LICENSE = "Apache-2.0 (Keras Applications)"
# VGG's classifier, as in keras.applications: flatten, then two 4096-wide layers before the logits
PRE_LOGITS = {"vgg": (4096, 4096)}
POOLING = {"vgg": "flatten"}
AFTER_LOAD = {"efficientnet": "applications.keras_apps:fold_efficientnet_stddev"}
STRIDES = (4, 8, 16, 32)


def stages_and_first_conv(constructor: str, size: int):
    model = build(constructor, (size, size, 3))
    first_conv = next(layer.name for layer in model._flatten_layers(include_self=False)
                      if isinstance(layer, keras.layers.Conv2D))  # ConvNeXt nests its stem
    # The last layer at each stride ends that stage; padding and cropping layers sit between stages.
    maps = [(layer.name, layer.output.shape[1]) for layer in model.layers
            if len(layer.output.shape) == 4
            and not isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D))]
    stages = {}
    for stride in STRIDES:
        exact = [name for name, h in maps if h == math.ceil(size / stride)]
        # valid-padded nets (Inception) never hit size/stride exactly: take the nearest power of two
        near = [name for name, h in maps if 2 ** round(math.log2(size / h)) == stride]
        if exact or near:
            stages[stride] = (exact or near)[-1]
    keras.backend.clear_session()
    return stages, first_conv


def main() -> int:
    rows = {c: a for c, top, a in json.loads(WEIGHTS_JSON.read_text()) if not top}
    lines = []
    for constructor, (arch, family, size, mode, min_size) in ENTRIES.items():
        w = rows[constructor]
        stages, first_conv = stages_and_first_conv(constructor, size)
        print(arch, stages, first_conv, file=sys.stderr)
        extra = ""
        if family in PRE_LOGITS:
            extra += f", pre_logits={PRE_LOGITS[family]!r}"
        if family in POOLING:
            extra += f", pooling={POOLING[family]!r}"
        if family in AFTER_LOAD:
            extra += f", after_load={AFTER_LOAD[family]!r}"
        if min_size != 32:
            extra += f", min_input_size={min_size}"
        lines.append(
            f"_entry({arch!r}, {constructor!r}, {family!r}, {size}, {mode!r}, {stages!r}, {first_conv!r},\n"
            f"       {w['fname']!r},\n       {w['origin']!r},\n       {w['file_hash']!r},\n"
            f"       {LICENSES.get(family, DEFAULT_LICENSE)!r}{extra})")
    OUT.write_text(HEADER + "\n".join(lines) + "\n")
    return 0


HEADER = '''"""The keras.applications families, as data.

Generated by scripts/make_keras_apps_catalog.py (edit that script, not this file). Each imagenet tag
carries the file name, URL and hash keras.applications itself uses for the no-top weights, so a file
a user already downloaded with keras.applications is found in Keras's cache and reused.
"""
from zoo.registry import ModelSpec, WeightSpec, register

# Top-1 on ImageNet's validation set of the weights with their top, as keras.io publishes it
# (keras-io templates/api/applications/index.md, "Available models"); ConvNeXt and MobileNetV3 have no row.
TOP1 = {
    "Xception": 0.790, "VGG16": 0.713, "VGG19": 0.713, "ResNet50": 0.749, "ResNet50V2": 0.760, "ResNet101": 0.764,
    "ResNet101V2": 0.772, "ResNet152": 0.766, "ResNet152V2": 0.780, "InceptionV3": 0.779,
    "InceptionResNetV2": 0.803, "MobileNet": 0.704, "MobileNetV2": 0.713, "DenseNet121": 0.750,
    "DenseNet169": 0.762, "DenseNet201": 0.773, "NASNetMobile": 0.744, "NASNetLarge": 0.825,
    "EfficientNetB0": 0.771, "EfficientNetB1": 0.791, "EfficientNetB2": 0.801, "EfficientNetB3": 0.816,
    "EfficientNetB4": 0.829, "EfficientNetB5": 0.836, "EfficientNetB6": 0.840, "EfficientNetB7": 0.843,
    "EfficientNetV2B0": 0.787, "EfficientNetV2B1": 0.798, "EfficientNetV2B2": 0.805, "EfficientNetV2B3": 0.820,
    "EfficientNetV2S": 0.839, "EfficientNetV2M": 0.853, "EfficientNetV2L": 0.857,
}


def _entry(arch, constructor, family, size, preprocessing, stages, first_conv, file_name, url, file_hash,
           license, **options):
    register(ModelSpec(
        arch=arch, family=family, source="keras.applications",
        builder="applications.keras_apps:build", builder_kwargs={"constructor": constructor},
        input_size=(size, size, 3), preprocessing=preprocessing, stages=stages, first_conv=first_conv,
        weights=(WeightSpec(tag="imagenet", file_name=file_name, url=url, file_hash=file_hash,
                            dataset="imagenet-1k", num_classes=1000, license=license,
                            input_size=(size, size), top1=TOP1.get(constructor)),),
        **options))


'''

if __name__ == "__main__":
    sys.exit(main())
