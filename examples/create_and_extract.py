"""Create catalog models in one line and use a pretrained backbone as a feature extractor.

Shows ``zoo.list_models`` and ``zoo.create_model`` with a new head, as a multi-scale feature
extractor (``features_only=True``) and as an embedding model (``num_classes=None``). The bundled
``resnet_tiny.digits`` backbone was pretrained on digits 0-4; here it embeds digits 5-9, which it
never saw, and a nearest-neighbour classifier under cosine similarity measures how well each
stage's features separate the new classes.

Run:  python examples/create_and_extract.py [--quick]
"""
import argparse

import numpy as np

import zoo

parser = argparse.ArgumentParser(description="embeddings of a pretrained zoo backbone")
parser.add_argument("--quick", action="store_true", help="embed 100 images instead of about 450")
args = parser.parse_args()

print("small ViTs:", zoo.list_models("*_p4"))
print("pretrained ResNets:", zoo.list_models(family="resnet", pretrained=True))

SIZE = (16, 16)  # the input size resnet_tiny.digits was pretrained at
classifier = zoo.create_model("resnet_tiny.digits", num_classes=5, input_shape=SIZE)
print("classifier:", classifier.input_shape, "->", classifier.output_shape)
features = zoo.create_model("resnet_tiny.digits", features_only=True, input_shape=SIZE)
embedder = zoo.create_model("resnet_tiny.digits", num_classes=None, input_shape=SIZE)

# digits 5-9 (relabelled 0-4): half of them in the test split, which is all this needs
_, _, test, info = zoo.data.load("digits", classes=[5, 6, 7, 8, 9], image_size=SIZE, channels=3, test_fraction=0.5)
images = np.concatenate([x for x, _ in test])
labels = np.concatenate([y for _, y in test])
if args.quick:
    images, labels = images[:100], labels[:100]
print(f"{len(images)} images of digits {', '.join(info.class_names)}")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def nearest_neighbour_accuracy(embeddings: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy under cosine similarity (embeddings centred on their mean)."""
    centred = unit(embeddings - embeddings.mean(axis=0))
    similarity = centred @ centred.T
    np.fill_diagonal(similarity, -np.inf)
    return float(np.mean(labels[similarity.argmax(axis=1)] == labels))


maps = features.predict(images, verbose=0)
for stride, fmap in maps.items():
    print(f"stage at stride {stride} {fmap.shape[1:]}: nearest-neighbour accuracy "
          f"{nearest_neighbour_accuracy(fmap.mean(axis=(1, 2))):.3f}")
embeddings = embedder.predict(images, verbose=0)
print(f"embedding {embeddings.shape[1:]}: nearest-neighbour accuracy {nearest_neighbour_accuracy(embeddings):.3f}"
      f" (the last stage, average-pooled: equal {np.allclose(embeddings, maps['4'].mean(axis=(1, 2)), atol=1e-5)})")

centred = unit(embeddings - embeddings.mean(axis=0))
means = unit(np.stack([centred[labels == c].mean(axis=0) for c in range(info.num_classes)]))
print("cosine similarity of the class means:")
print("     " + "".join(f"{name:>6}" for name in info.class_names))
for name, row in zip(info.class_names, means @ means.T):
    print(f"{name:>5}" + "".join(f"{value:6.2f}" for value in row))
