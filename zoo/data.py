"""One loader for every image source, matched to the model: ``load``.

    >>> train, val, test, info = load("digits", classes=[5, 6, 7, 8, 9], per_class=4)
    >>> info.num_classes, info.num_examples["train"], info.input_shape
    (5, 20, (8, 8, 1))

Sources: ``"digits"`` (scikit-learn's bundled 8x8 digits: real data, no network),
``"tfds:NAME[/CONFIG]"``, a folder with one sub-folder per class, arrays ``(x, y)`` (or
``((x, y), (x, y))`` train/test as ``keras.datasets`` gives them) and a ``tf.data.Dataset`` of
(image, label). Each split is a batched, prefetched ``tf.data.Dataset`` of (float32 image in
0-255, int32 label): normalisation stays inside the model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

from zoo import audio_sources, corpus, text_sources
from zoo.config import AUGMENTS
from zoo.errors import DataError, InvalidArgumentError

logger = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
AUTOTUNE = tf.data.AUTOTUNE
# For the functions the pipelines map: they branch with tf.cond and tf.switch_case themselves, so tf.data's default
# AutoGraph rewriting would change nothing in them, at about 0.4 s of a new process's first load (2026-12-07).
_as_written = tf.autograph.experimental.do_not_convert
FORMATS = "PNG, JPEG, GIF, BMP, WebP"  # what tf.io.decode_image reads
# Channels a model gets by default from images with 1 to 4 channels: alpha is dropped.
_DEFAULT_CHANNELS = {1: 1, 2: 1, 3: 3, 4: 3}


@dataclass(frozen=True)
class DataInfo:
    """What ``load`` knows about the data besides the datasets.

    >>> *_, info = load("digits", classes=[5, 6, 7, 8, 9], per_class=4)
    >>> info.class_names[:2], info.num_examples
    (('5', '6'), {'train': 20, 'validation': 90, 'test': 90})
    """

    source: str
    num_classes: int
    class_names: tuple[str, ...]
    num_examples: dict[str, int]  # per split: "train", "validation", "test"
    image_size: tuple[int, int] | None  # None for texts
    channels: int | None
    skipped: tuple[str, ...] = ()  # files left out because they do not decode as images
    modality: str = "image"  # "text" or "audio"
    sample_rate: int | None = None  # of sounds (Hz)

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """(height, width, channels): what ``zoo.create_model(input_shape=...)`` takes; None for texts and sounds."""
        return (*self.image_size, self.channels) if self.modality == "image" else None


@dataclass
class _Part:
    """One split of a source: ``select(idx)`` yields its (raw image, label) pairs at positions
    ``idx`` (None: all of them), in the source's order."""

    size: int
    select: Callable[[np.ndarray | None], tf.data.Dataset]
    read_labels: Callable[[], np.ndarray]
    held: tf.Tensor | None = None  # images as fed, in memory, that ``select`` gives (row, final label) pairs of

    @functools.cached_property
    def labels(self) -> np.ndarray:
        return self.read_labels()


@dataclass
class _Source:
    name: str
    parts: dict[str, _Part]  # "train", plus "validation" and "test" where the source has them
    class_names: tuple[str, ...] | None  # None: numbered from the labels
    shape: tuple  # (height, width, channels) of the raw images; None where it varies
    decode: Callable[[tf.Tensor, tuple[int, int]], tf.Tensor] | None = None  # raw element, size -> image
    paths: np.ndarray | None = None  # files, each decoded once up front to weed out bad ones
    modality: str = "image"  # "text": (string, label) pairs; "audio": (waveform, label); both go in as they are
    skipped: tuple[str, ...] = ()  # files left out as they were read (texts that are not UTF-8)
    sample_rate: int | None = None  # of a sound source


def load(
    source: Any,
    *,
    model: keras.Model | None = None,
    image_size: tuple[int, int] | int | None = None,
    channels: int | None = None,
    batch_size: int = 32,
    augment: str = "none",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    classes: Sequence[int | str] | None = None,
    per_class: int | None = None,
    num_classes: int | None = None,
    splits: Sequence[str | None] | None = None,
    shuffle: bool = True,
    cache: bool = True,
    strict: bool = False,
    data_dir: str | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset, DataInfo]:
    """Train, validation and test datasets of (float32 0-255 image, int32 label), and a DataInfo.

    The source's own validation/test splits are used where it has them; missing ones are cut
    from train with ``seed``, stratified by class (at random where classes are too small to
    stratify, keeping one example of each class in train). ``model=`` sets the image size and channels
    (grayscale is repeated to RGB, RGB turned to luminance, alpha dropped). ``classes`` keeps a
    subset (names or label ids, relabelled 0..k-1); ``per_class`` keeps that many training
    examples per class. ``augment`` ("light", "strong") changes the training split only.
    ``splits`` names tfds splits for (train, validation, test), e.g.
    ``("train[:80%]", "train[80%:90%]", "train[90%:]")``. Files that do not decode are skipped
    with a warning, or refused with ``strict=True``. Where the size is known (``model=`` or ``image_size``),
    a folder's files are decoded once, while they are checked, and held in memory as uint8 at that size
    (a JPEG much larger than it decodes at 1/2 to 1/8 scale); ``cache=False`` decodes them every epoch
    instead (data larger than memory). A ``tf.data.Dataset`` source must yield the
    same order on every pass (no reshuffling): its splits are cut by position.

        train, val, test, info = load("tfds:tf_flowers", model=model, batch_size=32)
        train, val, test, info = load("path/to/images", image_size=(160, 160), augment="light")
    """
    _check_arguments(batch_size=batch_size, per_class=per_class, num_classes=num_classes, channels=channels,
                     seed=seed, image_size=image_size)
    if augment not in AUGMENTS:
        raise InvalidArgumentError(f"augment={augment!r} is not a preset: use one of {AUGMENTS}")
    numeric = all(isinstance(f, (int, float, np.number)) and not isinstance(f, bool)
                  for f in (val_fraction, test_fraction))
    if not (numeric and 0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise InvalidArgumentError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and sum to "
            "less than 1"
        )
    src = _open(source, splits, data_dir, strict)
    names = _class_names(src, num_classes)
    ids = _class_ids(src, names, classes)
    chosen = _choose(src, ids, len(names), val_fraction, test_fraction, seed, per_class)
    label_map = None
    if not np.array_equal(ids, np.arange(len(names))):  # a subset, or a new order
        label_map = np.full(len(names), -1, np.int32)
        label_map[ids] = np.arange(len(ids))
    skipped: tuple[str, ...] = ()
    if src.modality != "image":
        _check_raw_options(src, model, augment)
        samples = model.inputs[0].shape[1] if model is not None and src.modality == "audio" else None
        return _raw_splits(src, chosen, names, ids, label_map, shuffle=shuffle, seed=seed, batch_size=batch_size,
                           samples=samples)
    if src.paths is not None:
        early = None  # what files decode to, where known before they are read: then the check reads them for good
        if cache:
            with contextlib.suppress(DataError, InvalidArgumentError):  # the files decide: asked again below
                early = _target(src, model, image_size, channels)
        early = early if early and early[1] in (1, 3) else None
        chosen, skipped, images = _drop_undecodable(src, chosen, strict, early)
        if images is not None and _target(src, model, image_size, channels) == early:  # the channels held
            chosen = _in_memory(chosen, images, label_map)
    size, channels = _target(src, model, image_size, channels)
    prepare = _preparer(src.decode, label_map, size, channels)
    layers = _augmentation(augment, seed)
    datasets = [
        _pipeline(*chosen[split], prepare, train=split == "train", shuffle=shuffle, cache=cache,
                  seed=seed, batch_size=batch_size, layers=layers)
        for split in SPLITS
    ]
    info = DataInfo(
        source=src.name,
        num_classes=len(ids),
        class_names=tuple(names[i] for i in ids),
        num_examples={s: part.size if idx is None else len(idx) for s, (part, idx) in chosen.items()},
        image_size=size,
        channels=channels,
        skipped=skipped,
    )
    return (*datasets, info)


def _check_arguments(*, image_size: Any, **numbers: Any) -> None:
    """Refuse bad numbers before any work: counts are positive integers (None: not given), the seed is 0 or more."""

    def integer(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    for name, value in numbers.items():
        optional = name not in ("batch_size", "seed")
        if value is None and optional:
            continue
        if not (integer(value) and value >= (0 if name == "seed" else 1)):
            rule = "an integer, 0 or more" if name == "seed" else "a positive integer"
            raise InvalidArgumentError(f"{name} must be {rule}{' or None' if optional else ''}, got {value!r}")
    if image_size is not None:
        size = (image_size, image_size) if integer(image_size) else image_size
        if (isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2
                or not all(integer(v) and v >= 1 for v in size)):
            raise InvalidArgumentError(f"image_size must be (height, width) in positive integers, or one integer, "
                                       f"got {image_size!r}")


# Sources -----------------------------------------------------------------------------------


def _open(source: Any, splits: Sequence[str | None] | None, data_dir: str | None, strict: bool = False) -> _Source:
    if isinstance(source, str) and source.startswith("tfds:"):
        if not source[len("tfds:"):].strip(" /"):
            raise InvalidArgumentError("'tfds:' needs a dataset name, e.g. 'tfds:tf_flowers' or 'tfds:mnist'")
        return _tfds(source[len("tfds:"):], splits, data_dir)
    if splits is not None or data_dir is not None:
        raise InvalidArgumentError("splits= and data_dir= apply to 'tfds:NAME' sources only")
    if isinstance(source, tf.data.Dataset):
        return _dataset(source)
    if text_sources.is_texts(source) or (isinstance(source, (tuple, list)) and source
                                         and all(text_sources.is_texts(p) for p in source)):
        return _texts(source)
    if isinstance(source, (tuple, list)):
        return _arrays(source)
    if isinstance(source, np.ndarray):
        raise DataError("an array alone has no labels: pass (x, y), images and one integer label per image")
    if source == "digits":
        return _digits()
    if source == corpus.SOURCE:
        texts, labels, classes = corpus.labelled()
        return _text_source(corpus.SOURCE, texts, labels, list(classes))
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() in text_sources.TABLES:
        path = Path(source).expanduser()
        return _text_source(str(path), *text_sources.read_table(path))
    if isinstance(source, (str, Path)):
        return _folder(Path(source), strict)
    raise DataError(
        f"cannot load a {type(source).__name__}: give 'digits', 'tfds:NAME', a folder of class "
        "sub-folders, (x, y) arrays or a tf.data.Dataset of (image, label)"
    )


def _digits() -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()  # bundled with scikit-learn: 1797 8x8 images with values 0-16
    x = (digits.images * (255 / 16)).astype(np.float32)
    part, shape = _array_part(x, digits.target)
    return _Source("digits", {"train": part}, tuple(str(i) for i in range(10)), shape)


def _arrays(pairs: Sequence) -> _Source:
    if len(pairs) == 2 and not isinstance(pairs[0], (tuple, list)):
        pairs = [pairs]  # a single (x, y)
    names = {1: SPLITS[:1], 2: ("train", "test"), 3: SPLITS}.get(len(pairs))
    if names is None or any(not isinstance(p, (tuple, list)) or len(p) != 2 for p in pairs):
        raise DataError(
            "pass arrays as (x, y), as ((x, y), (x, y)) for train and test like keras.datasets, "
            "or as ((x, y), (x, y), (x, y)) for train, validation and test"
        )
    parts, shapes = {}, set()
    for name, (x, y) in zip(names, pairs):
        parts[name], shape = _array_part(x, y)
        shapes.add(shape)
    if len(shapes) > 1:
        raise DataError(f"the splits' images differ in shape {sorted(shapes)}: give images of one shape")
    return _Source("arrays", parts, None, shapes.pop())


def _array_part(x: Any, y: Any) -> tuple[_Part, tuple]:
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # keras.datasets.cifar10 gives labels as (n, 1)
    if len(x) != len(y):
        raise DataError(f"x holds {len(x)} images but y holds {len(y)} labels: give one label per image")
    if x.ndim not in (3, 4):
        raise DataError(f"x has shape {x.shape}: give images as (n, height, width[, channels])")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"y has shape {y.shape} and dtype {y.dtype}: give one integer class id per image "
            "(for one-hot labels, y.argmax(-1))"
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if x.size and 0 <= x.min() and 0 < x.max() <= 1:
            warnings.warn("x lies in [0, 1] but models expect 0-255 images: pass x * 255", stacklevel=5)
    if x.ndim == 3:
        x = x[..., None]
    return _slices_part(x, y), x.shape[1:]


def _slices_part(x: np.ndarray | tf.Tensor, y: np.ndarray) -> _Part:
    """A part held in memory: images (or file paths) ``x`` and labels ``y``."""

    def select(idx: np.ndarray | None) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y) if idx is None else (x[idx], y[idx]))

    return _Part(len(y), select, lambda: y)


def _dataset(ds: tf.data.Dataset) -> _Source:
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise DataError(f"a tf.data.Dataset source must yield (image, label) pairs, not {spec}")
    if ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise DataError("the tf.data.Dataset repeats forever: pass it without .repeat()")
    if spec[1].shape.rank == 1:  # batched: one label per image
        ds = ds.unbatch()
    image, label = ds.element_spec
    if image.shape.rank not in (2, 3) or label.shape.rank != 0 or not label.dtype.is_integer:
        raise DataError(
            f"a tf.data.Dataset source must yield (image of shape (h, w[, c]), integer label); "
            f"this one yields {ds.element_spec}"
        )
    if image.shape.rank == 2:  # grayscale without a channel axis
        ds = ds.map(lambda image, label: (image[..., None], label))
    shape = tuple(ds.element_spec[0].shape)
    return _Source("tf.data.Dataset", {"train": _dataset_part(ds)}, None, shape)


def _dataset_part(ds: tf.data.Dataset, labels_from: tf.data.Dataset | None = None) -> _Part:
    """A part read from a dataset in a fixed order; ``labels_from`` yields the same labels faster."""

    def select(idx: np.ndarray | None) -> tf.data.Dataset:
        if idx is None:
            return ds
        mask = np.zeros(idx.max() + 1 if len(idx) else 0, bool)
        mask[idx] = True
        keep = tf.constant(mask)
        chosen = ds.take(len(mask)).enumerate().filter(lambda i, _: tf.gather(keep, i))
        return chosen.map(lambda _, pair: pair)

    def read_labels() -> np.ndarray:
        labelled = ds if labels_from is None else labels_from
        batches = labelled.map(lambda image, label: label).batch(65536)
        return np.concatenate([np.zeros(0, np.int64), *batches.as_numpy_iterator()])

    return _Part(int(ds.cardinality()), select, read_labels)


def _tfds(name: str, splits: Sequence[str | None] | None, data_dir: str | None) -> _Source:
    import tensorflow_datasets as tfds

    def read(split: str, **kwargs: Any) -> tuple[tf.data.Dataset, Any]:
        try:
            return tfds.load(name, split=split, as_supervised=True, shuffle_files=False,
                             with_info=True, data_dir=data_dir, **kwargs)
        except Exception as err:  # tfds raises many kinds: unknown name or split, no network, ...
            raise DataError(
                f"tfds:{name} split {split!r} does not load ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0]}): check the name with tfds.list_builders() and "
                f"the splits with tfds.builder({name!r}).info.splits; without network only datasets "
                "already prepared in data_dir load"
            ) from err

    train, val, test = (*splits, None, None)[:3] if splits is not None else ("train", None, None)
    if not train:
        raise InvalidArgumentError("splits= needs a training split first, e.g. ('train[:90%]', None, 'test')")
    _, info = read(train)
    if splits is None:  # the source's own splits
        val = "validation" if "validation" in info.splits else None
        test = "test" if "test" in info.splits else None
    names = getattr(info.features[info.supervised_keys[1]], "names", None) if info.supervised_keys else None
    if not names:
        raise DataError(f"tfds:{name} has no (image or text, class label) pairs: pick a classification set")
    image_key = info.supervised_keys[0]
    if isinstance(info.features[image_key], tfds.features.Text):  # imdb_reviews, ag_news_subset: no decoding
        parts = {s: _dataset_part(read(split)[0]) for s, split in zip(SPLITS, (train, val, test)) if split}
        return _Source(f"tfds:{name}", parts, tuple(names), None, modality="text")
    skip = {image_key: tfds.decode.SkipDecoding()}  # labels without decoding the images

    parts = {
        s: _dataset_part(read(split)[0], read(split, decoders=skip)[0])
        for s, split in zip(SPLITS, (train, val, test)) if split
    }
    return _Source(f"tfds:{name}", parts, tuple(names), tuple(info.features[image_key].shape))


def _texts(pairs: Sequence) -> _Source:
    """``(texts, labels)``, or train and test (and validation) pairs of them."""
    if text_sources.is_texts(pairs):
        return _text_source("texts", *pairs)
    names = {2: ("train", "test"), 3: SPLITS}.get(len(pairs))
    if names is None:
        raise DataError("pass texts as (texts, labels), or ((texts, labels), (texts, labels)) for train and test")
    sources = [_text_source(f"texts ({name})", *pair) for name, pair in zip(names, pairs)]
    classes = sorted({c for src in sources for c in src.class_names}, key=lambda c: (len(c), c) if c.isdigit() else
                     (0, c))
    parts = {name: _text_source(f"texts ({name})", *pair, class_names=classes).parts["train"]
             for name, pair in zip(names, pairs)}
    return _Source("texts", parts, tuple(classes), None, modality="text")


def _text_source(name: str, texts: Sequence, labels: Sequence, class_names: list[str] | None = None) -> _Source:
    x, y, classes = text_sources.labelled(list(texts), list(labels), name, class_names)
    return _Source(name, {"train": _slices_part(x, y)}, classes, None, modality="text")


def _folder(root: Path, strict: bool) -> _Source:
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder: give 'digits', 'tfds:NAME' or a folder with one sub-folder per class"
        )
    if text_sources.is_text_folder(root):
        return _text_folder(root, strict)
    if audio_sources.is_audio_folder(root):
        waves, classes, labels, rate = audio_sources.read_folder(root)
        ids = np.array([classes.index(label) for label in labels], np.int32)
        return _Source(str(root), {"train": _slices_part(waves, ids)}, tuple(classes), waves.shape[1:],
                       modality="audio", sample_rate=rate)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{root} holds {len(classes)} class folder(s): put each class's images in a sub-folder "
            f"of its own (at least two classes), e.g. {root / 'cats'}/1.jpg and {root / 'dogs'}/1.jpg"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(
            str(f) for f in folder.rglob("*")
            if f.is_file() and not any(p.startswith(".") for p in f.relative_to(folder).parts)
        )
        if not files:
            raise DataError(f"class folder {folder} holds no images: add some or remove the folder")
        paths += files
        labels += [label] * len(files)
    part = _slices_part(np.array(paths), np.array(labels))
    return _Source(str(root), {"train": part}, tuple(classes), (None, None, None),
                   decode=_decode_file, paths=np.array(paths))


def _text_folder(root: Path, strict: bool) -> _Source:
    texts, classes, labels, skipped = text_sources.read_folder(root, strict)
    return replace(_text_source(str(root), texts, labels, classes), skipped=skipped)


def _decode_file(path: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """A file's pixels as uint8, as ``_decode_with_shape`` makes them."""
    return _decode_with_shape(tf.io.read_file(path), size)[0]


def _decode_with_shape(data: tf.Tensor, size: tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """An image file's bytes as uint8 pixels, and the file's own (height, width, channels). A JPEG at least
    twice ``size`` on both sides decodes at 1/2, 1/4 or 1/8 scale (JPEG DCT scaling: less work after the
    entropy decoding), never below ``size``; the resize that follows does the rest."""

    def jpeg() -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.io.extract_jpeg_shape(data)
        scale = tf.reduce_min(shape[:2] // size)  # how many times too big
        step = tf.reduce_sum(tf.cast(scale >= [2, 4, 8], tf.int32))  # ratio 2**step
        return tf.switch_case(step, [lambda r=r: tf.io.decode_jpeg(data, ratio=r) for r in (1, 2, 4, 8)]), shape

    def other() -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(data, expand_animations=False)
        return image, tf.shape(image)

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def read_image(path: str, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as the model takes it: 0-255 float32, decoded and resized as in ``load``.

    Example:
        >>> read_image("cat.jpg", (224, 224), 3).shape
        (224, 224, 3)
    """
    if not Path(path).is_file():
        raise DataError(f"no such image file: {path}")
    prepare = _preparer(_decode_file, None, tuple(image_size), channels)
    try:
        image, _ = prepare(tf.constant(str(path)), tf.constant(0))
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        raise DataError(f"cannot read {path}: it is not a PNG, JPEG, BMP, GIF or WebP image") from e
    return tf.cast(image, tf.float32).numpy()


def _checked_shape(data: tf.Tensor) -> tf.Tensor:
    """The (height, width, channels) of an image file's bytes that decode; an error otherwise. A JPEG is
    decoded at 1/8 scale (every byte is still read by the same decoder, at a quarter of the cost)."""

    def jpeg() -> tf.Tensor:
        with tf.control_dependencies([tf.io.decode_jpeg(data, ratio=8)]):
            return tf.io.extract_jpeg_shape(data)

    def other() -> tf.Tensor:
        return tf.shape(tf.io.decode_image(data, expand_animations=False))

    return tf.cond(tf.io.is_jpeg(data), jpeg, other)


# Classes and splits ------------------------------------------------------------------------


def _class_names(src: _Source, num_classes: int | None) -> tuple[str, ...]:
    if src.class_names is not None:
        if num_classes not in (None, len(src.class_names)):
            raise InvalidArgumentError(
                f"num_classes={num_classes} but {src.name} has {len(src.class_names)} classes: "
                "leave num_classes out, or keep a subset with classes="
            )
        return src.class_names
    labels = np.concatenate([part.labels for part in src.parts.values()])
    if not len(labels):
        raise DataError(f"{src.name} holds no examples")
    bad = labels[(labels < 0) | (labels >= (num_classes or np.inf))]
    if len(bad):
        within = f"0..{num_classes - 1} (num_classes={num_classes})" if num_classes else "0 or more"
        raise DataError(f"label {bad[0]} in {src.name} is outside {within}: labels are class ids 0..n-1")
    return tuple(str(i) for i in range(num_classes or int(labels.max()) + 1))


def _class_ids(src: _Source, names: tuple[str, ...], classes: Sequence[int | str] | None) -> np.ndarray:
    if classes is None:
        return np.arange(len(names))
    by_name = {n: i for i, n in enumerate(names)}
    ids = []
    for c in classes:
        i = int(c) if isinstance(c, (int, np.integer)) else by_name.get(c, -1)
        if not 0 <= i < len(names):
            raise DataError(f"{src.name} has no class {c!r}; its classes: {', '.join(names[:20])}")
        ids.append(i)
    if len(set(ids)) != len(ids) or len(ids) < 2:
        raise InvalidArgumentError(f"classes={list(classes)} must name at least two different classes")
    return np.array(ids)


def _choose(
    src: _Source, ids: np.ndarray, total: int, val_fraction: float, test_fraction: float,
    seed: int, per_class: int | None,
) -> dict[str, tuple[_Part, np.ndarray | None]]:
    """The (part, positions) each split reads; positions None: the whole part."""

    def pick(part: _Part) -> np.ndarray | None:
        return None if len(ids) == total else np.flatnonzero(np.isin(part.labels, ids))

    train = src.parts["train"]
    chosen = {s: (src.parts[s], pick(src.parts[s])) for s in SPLITS[1:] if s in src.parts}
    missing = [s for s in SPLITS[1:] if s not in src.parts]
    idx = pick(train)
    if missing:
        pool = np.arange(len(train.labels)) if idx is None else idx
        idx = np.random.default_rng(seed).permutation(pool)  # so per_class draws at random, split or not
        fractions = {"validation": val_fraction, "test": test_fraction}
        for s in missing:
            # a positive fraction holds out at least one example (as scikit-learn rounds up), where one can be spared
            size = max(round(fractions[s] * len(pool)), 1 if fractions[s] > 0 else 0)
            idx, held = _hold_out(idx, train.labels[idx], size, seed)
            chosen[s] = (train, held)
    if per_class is not None:
        idx = _per_class(np.arange(len(train.labels)) if idx is None else idx, train.labels, per_class)
    chosen["train"] = (train, idx)
    return {s: chosen[s] for s in SPLITS}


def _hold_out(idx: np.ndarray, labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` (of classes ``labels``) as (rest, held out): ``size`` positions held out, stratified
    by class, and every class kept in the rest (so fewer are held out where classes are tiny).

    >>> [len(p) for p in _hold_out(np.arange(20), np.repeat([0, 1], 10), 4, seed=0)]
    [16, 4]
    """
    if size == 0:
        return idx, idx[:0]
    try:
        rest, held, kept, _ = train_test_split(idx, labels, test_size=size, stratify=labels,
                                               random_state=seed)
    except ValueError:  # scikit-learn refuses: a class of one, fewer to hold out than classes, ...
        pass
    else:
        if np.isin(labels, kept).all():  # every class keeps a training example
            return rest, held
    # Fallback: hold out at random among all but one example of each class (that one stays in the rest).
    order = np.random.default_rng(seed).permutation(len(idx))
    _, first = np.unique(labels[order], return_index=True)
    held = np.delete(order, first)[:size]
    logger.info("classes too small to stratify: held out %d of %d examples at random, one of each "
                "class kept for training", len(held), len(idx))
    return np.delete(idx, held), idx[held]


def _per_class(idx: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` positions of each class in ``idx``, in ``idx``'s order."""
    own = labels[idx]
    keep = [np.flatnonzero(own == c)[:n] for c in np.unique(own)]
    fewest = min(map(len, keep), default=n)
    if fewest < n:
        warnings.warn(f"per_class={n}: some classes have only {fewest} training examples", stacklevel=4)
    return idx[np.sort(np.concatenate(keep))]


def _drop_undecodable(
    src: _Source, chosen: dict[str, tuple[_Part, np.ndarray]], strict: bool,
    target: tuple[tuple[int, int], int] | None = None
) -> tuple[dict[str, tuple[_Part, np.ndarray]], tuple[str, ...], tf.Tensor | None]:
    """Decode each chosen file once (read once), with the pipeline's own decoder, so that none fails
    mid-epoch; learn the images' common size and channels on the way. With ``target`` (the pipeline's
    size and channels), also return what it makes of every good file, in order: the images, decoded once."""
    every = np.unique(np.concatenate([idx for _, idx in chosen.values()]))
    prepare = target and _preparer(None, None, *target)

    @_as_written
    def check(i: tf.Tensor, path: tf.Tensor):
        data = tf.io.read_file(path)
        if prepare is None:
            return i, _checked_shape(data), 0
        image, shape = _decode_with_shape(data, target[0])  # one decoding gives both
        return i, shape, prepare(image, 0)[0]

    ds = tf.data.Dataset.from_tensor_slices(src.paths[every]).enumerate().map(check, num_parallel_calls=AUTOTUNE)
    # One call per core, untuned: with tf.data's autotuning on, about one such pass in three (TF 2.21, 2 cores)
    # sat with every core idle for about a second, at any point of the pass; with it off, none in 36.
    untuned = tf.data.Options()
    untuned.autotune.enabled = False
    found = [*ds.ignore_errors().batch(len(every)).with_options(untuned)]  # one batch: one tensor, not pieces to join
    good = every[np.concatenate([np.zeros(0, np.int64), *(i.numpy() for i, _, _ in found)])]
    if not len(good):
        raise DataError(f"no file in {src.name} decodes as an image ({FORMATS})")
    shapes = np.concatenate([s.numpy() for _, s, _ in found])
    src.shape = tuple(int(col[0]) if len(set(col)) == 1 else None for col in shapes.T)
    skipped = tuple(src.paths[np.setdiff1d(every, good)])
    if skipped:
        listed = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        message = f"{len(skipped)} file(s) in {src.name} do not decode as images ({FORMATS}): {listed}"
        if strict:
            raise DataError(f"{message}; remove them, or leave strict=False to skip them")
        warnings.warn(f"{message}; skipped them (strict=True refuses them)", stacklevel=3)
    images = None if prepare is None else found[0][2]
    kept = {s: (part, idx[np.isin(idx, good)]) for s, (part, idx) in chosen.items()}
    return kept, skipped, images


def _in_memory(
    chosen: dict[str, tuple[_Part, np.ndarray]], images: tf.Tensor, label_map: np.ndarray | None
) -> dict[str, tuple[_Part, None]]:
    """The splits of a folder read from ``images``, the decoded good files of every split in path order."""
    good = np.unique(np.concatenate([idx for _, idx in chosen.values()]))
    labels = next(iter(chosen.values()))[0].labels  # a folder has one part; every split is cut from it
    splits = {}
    for s, (_, idx) in chosen.items():
        y = labels[idx]
        y = (y if label_map is None else label_map[y]).astype(np.int32)
        splits[s] = (replace(_slices_part(np.searchsorted(good, idx), y), held=images), None)  # rows: not copied
    return splits


# Matching the model ------------------------------------------------------------------------


def _target(
    src: _Source, model: keras.Model | None, image_size: Any, channels: int | None
) -> tuple[tuple[int, int], int]:
    """The (height, width) and channels to feed: the model's, else the arguments', else the source's."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height = width = want = None
    if model is not None:
        shape = model.input_shape
        if not isinstance(shape, tuple) or len(shape) != 4 or isinstance(shape[0], tuple):  # one input
            raise InvalidArgumentError(
                f"model takes inputs of shape {shape}: load feeds one image input "
                "(batch, height, width, channels)"
            )
        _, height, width, want = shape
    if image_size is not None and None not in (height, width) and tuple(image_size) != (height, width):
        raise InvalidArgumentError(
            f"image_size={tuple(image_size)} conflicts with the model's input size {(height, width)}: "
            "leave image_size out"
        )
    if channels is not None and want is not None and channels != want:
        raise InvalidArgumentError(
            f"channels={channels} conflicts with the model's {want} input channels: leave channels out"
        )
    size = (height, width) if None not in (height, width) else src.shape[:2]
    size = tuple(image_size) if image_size is not None else size
    if None in size:
        raise DataError(f"the images in {src.name} differ in size: pass image_size=(height, width) or model=")
    channels = channels or want or _DEFAULT_CHANNELS.get(src.shape[2], 3)
    if channels not in (1, 3) and channels != src.shape[2]:
        raise InvalidArgumentError(f"channels={channels}: images convert to 1 or 3 channels only")
    return (int(size[0]), int(size[1])), int(channels)


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Grayscale to RGB by repeating, RGB to grayscale by luminance; alpha is dropped."""
    have = image.shape[-1]
    if have is None:  # a decoded file: known per image only
        if channels not in (1, 3):  # then every file has this many (_target checked it)
            return tf.ensure_shape(image, [None, None, channels])
        # As RGB first, without tf.cond (under half its tracing time): the gray channel repeated
        # (luminance gives it back exactly: the weights sum to 0.9999 and uint8 rounds down from x * 255.5 / 255),
        # or RGB(A)'s first three (a tile by 1, which costs nothing).
        gray = tf.shape(image)[-1] < 3
        rgb = tf.tile(image[..., : tf.where(gray, 1, 3)], [1, 1, tf.where(gray, 3, 1)])
        return _to_channels(tf.ensure_shape(rgb, [None, None, 3]), channels)
    if have == channels:
        return image
    if have in (2, 4):
        return _to_channels(image[..., : have - 1], channels)
    return tf.image.grayscale_to_rgb(image) if channels == 3 else tf.image.rgb_to_grayscale(image)


def _preparer(
    decode: Callable | None, label_map: np.ndarray | None, size: tuple[int, int], channels: int
) -> Callable:
    """The per-example map: decode, fix channels, resize. uint8 images stay uint8 (4x less to cache)."""

    @_as_written
    def prepare(raw: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = decode(raw, size) if decode else raw
        image = _to_channels(image, channels)
        if tuple(image.shape[:2]) != size:
            resized = tf.image.resize(image, size)
            image = tf.saturate_cast(tf.round(resized), tf.uint8) if image.dtype == tf.uint8 else resized
        label = tf.cast(label, tf.int32) if label_map is None else tf.gather(label_map, label)
        return image, label

    return prepare


# Pipeline ----------------------------------------------------------------------------------


def _augmentation(preset: str, seed: int) -> list[keras.layers.Layer]:
    """Keras random layers: horizontal flip, random resized crop (zoom in), rotation, contrast;
    "strong" adds RandAugment."""
    if preset == "none":
        return []
    strong = preset == "strong"
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomZoom((-0.4 if strong else -0.2, 0.0), seed=seed + 1),
        keras.layers.RandomRotation(0.1 if strong else 0.03, seed=seed + 2),
        keras.layers.RandomContrast(0.3 if strong else 0.1, value_range=(0, 255), seed=seed + 3),
    ]
    if strong:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed + 4))
    return layers


def _pipeline(
    part: _Part, idx: np.ndarray | None, prepare: Callable, *, train: bool, shuffle: bool,
    cache: bool, seed: int, batch_size: int, layers: list[keras.layers.Layer],
) -> tf.data.Dataset:
    """select -> decode and resize in parallel -> cache -> shuffle (train) -> batch -> augment (train)
    -> float32 -> prefetch. Shuffling comes after the cache so that each epoch has a new order. A held part
    (decoded files in memory) shuffles its rows and gathers whole batches instead of the first four steps."""
    n = max(part.size if idx is None else len(idx), 1)
    shuffle = train and shuffle
    layers = layers if train else []  # augmentation changes the training split only

    @_as_written
    def finish(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        for layer in layers:
            images = layer(images, training=True)
        return images, labels

    # Augmentation goes one batch at a time: the layers' random state then advances in a fixed order, so seeded
    # runs repeat.
    parallel = None if layers else AUTOTUNE
    if part.held is not None:  # shuffle rows and gather whole batches: nothing is copied into a buffer
        ds = part.select(None)
        ds = ds.shuffle(n, seed=seed) if shuffle else ds
        ds = ds.batch(batch_size).map(_as_written(lambda rows, labels: finish(tf.gather(part.held, rows), labels)),
                                      num_parallel_calls=parallel)
        return ds.prefetch(AUTOTUNE)
    ds = part.select(idx)
    if shuffle and not cache:
        ds = ds.shuffle(n, seed=seed)
    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(n, seed=seed)
    ds = ds.batch(batch_size)
    if ds.element_spec[0].dtype != tf.string:  # texts go to the model's tokenizer as they are
        ds = ds.map(finish, num_parallel_calls=parallel)
    return ds.prefetch(AUTOTUNE)


def _check_raw_options(src: _Source, model: keras.Model | None, augment: str) -> None:
    """Texts and sounds go to the model as they are: no augmentation, and a model that takes them."""
    what = {"text": "texts", "audio": "sounds"}[src.modality]
    if augment != "none":
        raise InvalidArgumentError(f"augment={augment!r} transforms images; {src.name} holds {what}: leave augment out")
    if model is None:
        return
    fits = model.inputs[0].dtype == "string" if src.modality == "text" else len(model.inputs[0].shape) == 2
    if not fits:
        hint = "a text model with its tokenizer (e.g. zoo.create_model('bert_tiny.uncased'))" \
            if src.modality == "text" else "a model with a spectrogram front end (zoo.audio_model)"
        raise InvalidArgumentError(f"{src.name} holds {what} but {model.name} takes {model.inputs[0].dtype} tensors "
                                   f"of shape {tuple(model.inputs[0].shape)}: give {hint}")
    if src.modality == "audio":
        audio_sources.check_rate(src.name, src.sample_rate, model)


def _raw_splits(
    src: _Source, chosen: dict[str, tuple[_Part, np.ndarray | None]], names: tuple[str, ...], ids: np.ndarray,
    label_map: np.ndarray | None, *, shuffle: bool, seed: int, batch_size: int, samples: int | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset, DataInfo]:
    """The three splits of a text or sound source, batches of (string or waveform, int32 label), and its DataInfo.
    ``samples``: the model's clip length, which waveforms are padded with silence or cut to (and said once)."""
    longest = src.shape[0] if src.modality == "audio" else None
    if samples is not None and samples < longest:
        logger.warning("%s holds clips of up to %.2f s; the model takes %.2f s: longer clips are cut", src.name,
                       longest / src.sample_rate, samples / src.sample_rate)

    def relabel(x: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if samples is not None:
            x = tf.pad(x[:samples], [[0, max(samples - longest, 0)]])
        return x, tf.cast(label, tf.int32) if label_map is None else tf.gather(label_map, label)

    datasets = [_pipeline(*chosen[split], relabel, train=split == "train", shuffle=shuffle, cache=True, seed=seed,
                          batch_size=batch_size, layers=[]) for split in SPLITS]
    info = DataInfo(source=src.name, num_classes=len(ids), class_names=tuple(names[i] for i in ids),
                    num_examples={s: part.size if idx is None else len(idx) for s, (part, idx) in chosen.items()},
                    image_size=None, channels=None, skipped=src.skipped, modality=src.modality,
                    sample_rate=src.sample_rate)
    return (*datasets, info)
