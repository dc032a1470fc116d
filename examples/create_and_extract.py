"""Create catalog models in one line and use a pretrained backbone as a feature extractor.

Shows ``zoo.list_models`` and ``zoo.create_model`` with a new head, as a multi-scale feature
extractor (``features_only=True``) and as an embedding model (``num_classes=None``). The bundled
``resnet_tiny.digits`` backbone was pretrained on digits 0-4; here it embeds digits 5-9, which it
never saw, and DINO's weighted kNN classifier (``zoo.knn_accuracy``) measures how well each stage's
features (``zoo.intermediates``) separate the new classes.

Run:  python examples/create_and_extract.py [--quick]
"""
import argparse

import numpy as np

import zoo

parser = argparse.ArgumentParser(description="embeddings of a pretrained zoo backbone")
parser.add_argument("--quick", action="store_true", help="embed 100 test images instead of about 450")
args = parser.parse_args()

print("small ViTs:", zoo.list_models("*_p4"))
print("pretrained ResNets:", zoo.list_models(family="resnet", pretrained=True))

SIZE = (16, 16)  # the input size resnet_tiny.digits was pretrained at
classifier = zoo.create_model("resnet_tiny.digits", num_classes=5, input_shape=SIZE)
print("classifier:", classifier.input_shape, "->", classifier.output_shape)
features = zoo.create_model("resnet_tiny.digits", features_only=True, input_shape=SIZE)
embedder = zoo.create_model("resnet_tiny.digits", num_classes=None, input_shape=SIZE)

# digits 5-9 (relabelled 0-4): half of them held out for testing, the rest (less 10%) the kNN's memory
train, _, test, info = zoo.data.load("digits", classes=[5, 6, 7, 8, 9], image_size=SIZE, channels=3,
                                     test_fraction=0.5)
(train_x, train_y), (test_x, test_y) = ([np.concatenate(part) for part in zip(*split)] for split in (train, test))
if args.quick:
    test_x, test_y = test_x[:100], test_y[:100]
print(f"{len(train_x)} + {len(test_x)} images of digits {', '.join(info.class_names)}")

stages = [zoo.intermediates(classifier, x, pool="avg") for x in (train_x, test_x)]
for stride in stages[0]:
    accuracy = zoo.knn_accuracy(stages[0][stride], train_y, stages[1][stride], test_y)
    print(f"stage at stride {stride} (width {stages[0][stride].shape[1]}): kNN accuracy {accuracy:.3f}")
embeddings = [embedder.predict(x, verbose=0) for x in (train_x, test_x)]
accuracy = zoo.knn_accuracy(embeddings[0], train_y, embeddings[1], test_y)
print(f"embedding {embeddings[1].shape[1:]}: kNN accuracy {accuracy:.3f}"
      f" (the last stage, average-pooled: equal {np.allclose(embeddings[1], stages[1]['4'], atol=1e-5)})")
maps = features.predict(test_x, verbose=0)
print("feature maps:", {stride: fmap.shape[1:] for stride, fmap in maps.items()})


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


centred = unit(embeddings[1] - embeddings[1].mean(axis=0))
means = unit(np.stack([centred[test_y == c].mean(axis=0) for c in range(info.num_classes)]))
print("cosine similarity of the class means:")
print("     " + "".join(f"{name:>6}" for name in info.class_names))
for name, row in zip(info.class_names, means @ means.T):
    print(f"{name:>5}" + "".join(f"{value:6.2f}" for value in row))
