"""LoRA fine-tuning of a small ViT: adapters train, the backbone stays frozen, saving merges them.

``vit_pico_p4`` (a 0.7M-parameter ViT with 4x4 patches) is first trained from scratch on
scikit-learn's digits 0-4, and its backbone saved as a weights file. A new model built from that
file (``pretrained=PATH``) then learns digits 5-9 with ``zoo.apply_lora`` and the ``lora`` recipe:
only the low-rank adapters and the head train. Saved to ``.keras``, the adapters are merged into
the kernels, and the reloaded model predicts what the adapted one does.

The digits are 8x8, so the ViT runs at 16x16 (4x4 patches; its position embeddings are
interpolated from the 8x8 grid it declares).

Run:  python examples/lora_vit.py [--out DIR] [--quick]
"""
import argparse
from pathlib import Path

import keras
import numpy as np

import zoo

parser = argparse.ArgumentParser(description="LoRA fine-tuning of a small ViT")
parser.add_argument("--out", default="lora_vit_out", help="where the weights and the .keras file go")
parser.add_argument("--quick", action="store_true", help="1 epoch per step, 20 images per class")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
SIZE = (16, 16)
epochs = 1 if args.quick else 8
options = dict(learning_rate=1e-3, batch_size=32, verbose=0 if args.quick else 2)
subset = {"per_class": 20} if args.quick else {}


def trainable(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


# 1. pretrain on digits 0-4 and keep the backbone
keras.utils.set_random_seed(0)  # the same random initialisation on every run
scratch = zoo.create_model("vit_pico_p4", num_classes=5, pretrained=False, input_shape=SIZE)
result = zoo.finetune(scratch, "digits", recipe="full", epochs=epochs, **options,
                      data_options={"classes": [0, 1, 2, 3, 4], **subset})
print(f"pretrained on digits 0-4: test accuracy {result.metrics['test_accuracy']:.3f}")
weights = out / "vit_pico_digits04.weights.h5"
zoo.save_backbone_weights(result.model, weights)

# 2. LoRA on digits 5-9: adapters on the query and value projections of every attention block (as in the LoRA paper)
model = zoo.create_model("vit_pico_p4", num_classes=5, pretrained=weights, input_shape=SIZE)
before = trainable(model)
adapted = zoo.apply_lora(model, rank=4)
print(f"LoRA rank 4 on {len(adapted)} layers: trainable parameters {before:,} -> {trainable(model):,}")
result = zoo.finetune(model, "digits", recipe="lora", epochs=epochs, **options,
                      data_options={"classes": [5, 6, 7, 8, 9], **subset})
print(f"LoRA on digits 5-9: test accuracy {result.metrics['test_accuracy']:.3f}")

# 3. save (the adapters are merged into the kernels), reload, compare predictions
path = out / "vit_pico_lora.keras"
result.model.save(path)
merged = zoo.load_model(path, compile=False)
images = np.random.default_rng(0).uniform(0, 255, (16, *SIZE, 3)).astype("float32")
difference = np.abs(merged.predict(images, verbose=0) - result.model.predict(images, verbose=0)).max()
print(f"saved {path}: merged predictions equal the adapted model's: {difference < 1e-4} "
      f"(max difference {difference:.1e})")
