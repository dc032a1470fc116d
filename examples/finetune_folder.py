"""Guided fine-tuning on a folder of images: freeze, find a learning rate, fine-tune in two phases.

Writes scikit-learn's digits 5-9 as PNG files, one sub-folder per class (real data, saved as
files as your own images would be), then adapts the bundled ``resnet_tiny.digits`` backbone
(pretrained on digits 0-4) to them: ``zoo.freeze`` and ``zoo.trainable_summary``, ``zoo.lr_find``
for a learning rate (its plot saved), and ``zoo.finetune`` with the ``two_phase`` recipe (head
first, then the top blocks) into a run directory.

Run:  python examples/finetune_folder.py [--out DIR] [--quick]
"""
import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import zoo

parser = argparse.ArgumentParser(description="fine-tune a pretrained zoo model on a folder of images")
parser.add_argument("--out", default="finetune_folder_out", help="where the images and the run go")
parser.add_argument("--quick", action="store_true", help="30 images per class and 3 epochs")
args = parser.parse_args()
out = Path(args.out)
images = out / "images"

# 1. a folder of PNG files: out/images/<digit>/<n>.png
digits = load_digits()
per_class = 30 if args.quick else None
for digit in range(5, 10):
    folder = images / str(digit)
    folder.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(digits.images[digits.target == digit][:per_class]):
        pixels = (image * 255 / 16).astype(np.uint8)[..., None]  # 8x8, values 0-16 -> 0-255 grayscale
        tf.io.write_file(str(folder / f"{n}.png"), tf.io.encode_png(pixels))
print(f"wrote {len(list(images.glob('*/*.png')))} PNG files under {images}")

# 2. the pretrained model with a new 5-class head, its backbone frozen
model = zoo.create_model("resnet_tiny.digits", num_classes=5, input_shape=(16, 16))
zoo.freeze(model)
print(zoo.trainable_summary(model))

# 3. a learning rate for the head from the range test
train, _, _, info = zoo.data.load(images, model=model, batch_size=16)
found = zoo.lr_find(model, train, start=1e-4, end=1.0, steps=60, plot=str(out / "lr_find.png"))
print(f"lr_find suggests {found.suggestion:.2g} (plot: {out / 'lr_find.png'})")

# 4. two phases: the head on cached features, then the top 2 blocks at a tenth of the rate
result = zoo.finetune(model, data=images, recipe="two_phase", epochs=3 if args.quick else 9,
                      learning_rate=found.suggestion, batch_size=16, run_dir=out / "run", overwrite=True,
                      verbose=0 if args.quick else "auto")
for phase in result.phases:
    print(f"phase {phase.name}: {phase.epochs} epochs, trains {phase.describe()}")
print(f"classes {info.class_names}: test accuracy {result.metrics['test_accuracy']:.3f} "
      f"(model saved to {result.run_dir}/model.keras)")
