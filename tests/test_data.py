"""zoo.data.load: every source, splits, model matching, augmentation and bad input. No network."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from zoo.data import SPLITS, DataInfo, load
from zoo.errors import DataError, InvalidArgumentError, ZooError


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def epoch(ds):
    xs, ys = zip(*batches(ds))
    return np.concatenate(xs), np.concatenate(ys)


def id_images(ids, size=4):
    """Images whose every pixel is the example's id, so that each split's examples can be told apart."""
    return np.broadcast_to(np.asarray(ids, np.float32)[:, None, None], (len(ids), size, size)).copy()


def ids_of(ds):
    return np.concatenate([np.zeros(0, int), *(x[:, 0, 0, 0].astype(int) for x, _ in batches(ds))])


def split_ids(source, **kwargs):
    """The example ids in each split, and the DataInfo."""
    *datasets, info = load(source, **kwargs)
    ids = {name: ids_of(ds) for name, ds in zip(SPLITS, datasets)}
    assert {name: len(i) for name, i in ids.items()} == info.num_examples
    return ids, info


def model_for(shape):
    return keras.Sequential([keras.Input(shape), keras.layers.GlobalAveragePooling2D()])


def save(path, array):
    """(h, w) arrays save as grayscale, (h, w, 3) as RGB, (h, w, 4) as RGBA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def fill(shape, value):
    return np.full(shape, value, np.uint8)


# Sources --------------------------------------------------------------------------------------


def test_digits_class_subset_with_few_labelled_examples_per_class():
    train, val, test, info = load("digits", classes=[5, 6, 7, 8, 9], per_class=4, batch_size=8)
    x, y = epoch(train)
    assert isinstance(info, DataInfo) and info.source == "digits"
    assert info.num_classes == 5 and info.class_names == ("5", "6", "7", "8", "9")
    assert x.shape == (20, 8, 8, 1) and x.dtype == np.float32 and info.input_shape == (8, 8, 1)
    assert np.bincount(y).tolist() == [4] * 5  # relabelled 0..4, four each
    assert 0 <= x.min() and 250 < x.max() <= 255  # 0-16 scaled to 0-255
    _, y_val = epoch(val)
    assert set(y_val) == set(range(5)) and len(y_val) > 20  # per_class limits train only
    assert info.num_examples == {"train": 20, "validation": len(y_val), "test": len(epoch(test)[1])}


def test_made_splits_are_stratified_disjoint_and_cover_every_example():
    y = np.repeat(np.arange(4), [80, 60, 40, 20])
    train, val, test, info = load((id_images(range(200)), y), val_fraction=0.2, test_fraction=0.1)
    ids = {name: ids_of(ds) for name, ds in zip(SPLITS, (train, val, test))}
    every = np.concatenate(list(ids.values()))
    assert len(every) == 200 and len(set(every)) == 200  # no example in two splits, none lost
    assert info.num_examples == {"train": 140, "validation": 40, "test": 20}
    for name, fraction in (("validation", 0.2), ("test", 0.1)):
        counts = np.bincount(y[ids[name]], minlength=4)
        assert np.abs(counts - fraction * np.array([80, 60, 40, 20])).max() <= 1


def test_keras_datasets_style_tuples_keep_their_own_test_split():
    train_xy = (id_images(range(60)).astype(np.uint8), np.arange(60) % 3)
    test_xy = (id_images(range(100, 112)).astype(np.uint8), (np.arange(12) % 3)[:, None])  # (n, 1) like cifar
    train, val, test, info = load((train_xy, test_xy), val_fraction=0.2)
    assert sorted(ids_of(test)) == list(range(100, 112))
    train_ids, val_ids = ids_of(train), ids_of(val)
    assert sorted([*train_ids, *val_ids]) == list(range(60)) and len(val_ids) == 12
    assert info.num_classes == 3 and info.num_examples["test"] == 12


def test_tf_data_dataset_source_batched_and_without_channel_axis():
    y = np.arange(90) % 3
    ds = tf.data.Dataset.from_tensor_slices((id_images(range(90)), y)).batch(7)
    train, val, test, info = load(ds, val_fraction=0.2, test_fraction=0.2, batch_size=16)
    parts = [epoch(d) for d in (train, val, test)]
    ids = [x[:, 0, 0, 0].astype(int) for x, _ in parts]
    assert sorted(np.concatenate(ids)) == list(range(90))
    assert [len(i) for i in ids] == [54, 18, 18] and info.input_shape == (4, 4, 1)
    for split_ids, (_, labels) in zip(ids, parts):
        assert (labels == y[split_ids]).all()  # labels travel with their images


def test_tfds_mocked_mnist_matched_to_an_rgb_model():
    with tfds.testing.mock_data(num_examples=20):
        train, val, test, info = load("tfds:mnist", model=model_for((32, 32, 3)), batch_size=4)
        x, y = next(iter(train))
        sizes = [len(epoch(d)[1]) for d in (train, val, test)]
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert np.array_equal(x[..., 0], x[..., 2])  # grayscale repeated to RGB
    assert info.source == "tfds:mnist" and info.num_classes == 10 and info.class_names[:2] == ("0", "1")
    assert sum(sizes) == 20 and list(info.num_examples.values()) == sizes


def test_tfds_images_of_varying_size_need_a_size():
    with tfds.testing.mock_data(num_examples=6):
        with pytest.raises(DataError, match="image_size"):
            load("tfds:tf_flowers")
        train, _, _, info = load("tfds:tf_flowers", image_size=16, val_fraction=0, test_fraction=0)
        x, _ = epoch(train)
    assert x.shape == (6, 16, 16, 3) and info.class_names[0] == "dandelion"


class ZooTinyImages(tfds.core.GeneratorBasedBuilder):
    """A real tfds dataset with train and test splits, prepared offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(shape=(6, 6, 3)),
                    "label": tfds.features.ClassLabel(names=["a", "b", "c"])}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                     supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30), "test": self._generate_examples(9)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": fill((6, 6, 3), i), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    ZooTinyImages(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_own_test_split_is_used_and_validation_cut_from_train(tiny_tfds):
    train, val, test, info = load("tfds:zoo_tiny_images", data_dir=tiny_tfds, val_fraction=0.2)
    assert info.num_examples == {"train": 24, "validation": 6, "test": 9}
    assert sorted(ids_of(test)) == list(range(9))
    assert sorted([*ids_of(train), *ids_of(val)]) == list(range(30))
    assert info.class_names == ("a", "b", "c")


def test_tfds_split_strings_and_class_names(tiny_tfds):
    splits = ("train[:60%]", "train[60%:]", "test")
    train, val, test, info = load("tfds:zoo_tiny_images", data_dir=tiny_tfds, splits=splits,
                                  classes=["c", "a"])
    assert info.class_names == ("c", "a")
    for ds in (train, val, test):
        images, labels = epoch(ds)
        assert ((images[:, 0, 0, 0] % 3 == 2) == (labels == 0)).all()  # "c" (ids 2, 5, ...) is now 0
    assert info.num_examples["test"] == 6  # 9 test examples, two classes of three kept


def test_tfds_unknown_name_or_split_is_a_data_error(tiny_tfds):
    with pytest.raises(DataError, match="no_such_dataset_zoo"):
        load("tfds:no_such_dataset_zoo")
    with pytest.raises(DataError, match="'bogus'"):
        load("tfds:zoo_tiny_images", data_dir=tiny_tfds, splits=("bogus",))


# Folders --------------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """Two classes, 8x8 images: PNG and JPEG, grayscale and RGBA, BMP and GIF, nested, upper-case names."""
    save(tmp_path / "cat" / "a.png", fill((8, 8, 3), 200))
    save(tmp_path / "cat" / "b.PNG", fill((8, 8), 50))
    save(tmp_path / "cat" / "deep" / "er" / "c.jpg", fill((8, 8, 3), 120))
    save(tmp_path / "cat" / "D.JPEG", fill((8, 8, 3), 10))
    save(tmp_path / "dog" / "e.png", np.dstack([fill((8, 8, 3), 90), fill((8, 8), 0)]))
    save(tmp_path / "dog" / "f.bmp", fill((8, 8, 3), 30))
    save(tmp_path / "dog" / "g.GIF", fill((8, 8, 3), 60))
    save(tmp_path / "dog" / "h.jpeg", fill((8, 8), 250))
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not examples
    return tmp_path


def test_folder_reads_every_format_and_nested_files(folder):
    train, _, _, info = load(folder, val_fraction=0, test_fraction=0)
    x, y = epoch(train)
    assert info.class_names == ("cat", "dog") and info.input_shape == (8, 8, 3) and info.skipped == ()
    assert np.bincount(y).tolist() == [4, 4] and x.shape == (8, 8, 8, 3)
    means = np.sort(x.mean(axis=(1, 2, 3)))
    assert np.allclose(means, [10, 30, 50, 60, 90, 120, 200, 250], atol=2)  # alpha dropped, gray repeated


def test_large_jpegs_decode_at_reduced_scale_like_pillow_draft_and_predict_reads_the_same_pixels(tmp_path):
    """A photo far larger than the input decodes at 1/2-1/8 scale (JPEG DCT scaling, as Pillow's
    ``draft``), then resizes, held in memory or not; ``read_image`` (predict, explain) gives exactly what
    training sees."""
    from zoo.data import read_image

    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (1200, 1000), "b": (700, 1300)}.items():
        smooth = Image.fromarray(rng.integers(0, 256, (h // 100, w // 100, 3), dtype=np.uint8))
        grain = rng.integers(-40, 40, (h, w, 3))  # fine detail: a full decode resized would alias it
        photo = np.clip(np.asarray(smooth.resize((w, h), Image.BICUBIC)) + grain, 0, 255)
        save(tmp_path / name / "photo.jpg", photo)
    train, _, _, _ = load(tmp_path, image_size=(100, 80), val_fraction=0, test_fraction=0, shuffle=False)
    x, _ = epoch(train)  # decoded once, while the files are checked, and held in memory
    streamed, _, _, _ = load(tmp_path, image_size=(100, 80), val_fraction=0, test_fraction=0, shuffle=False,
                             cache=False)  # decoded every epoch
    assert np.array_equal(epoch(streamed)[0], x)
    for got, name, reduced in zip(x, "ab", [(150, 125), (175, 325)]):  # 1/8 and 1/4 scale
        with Image.open(tmp_path / name / "photo.jpg") as im:
            im.draft("RGB", (80, 100))  # the smallest DCT scale still at least (w, h) = (80, 100)
            scaled = np.asarray(im.convert("RGB"), np.float32)
        assert scaled.shape[:2] == reduced
        want = tf.image.resize(scaled, (100, 80)).numpy()
        assert np.abs(got - np.round(want)).max() <= 2  # the same decode (libjpeg rounding aside)
        assert np.array_equal(read_image(str(tmp_path / name / "photo.jpg"), (100, 80), 3), got)


def test_folder_split_into_three_disjoint_parts(tmp_path):
    for c in range(3):
        for i in range(10):
            save(tmp_path / f"class{c}" / f"{i}.png", fill((4, 4), 10 * c + i))
    train, val, test, info = load(tmp_path, val_fraction=0.2, test_fraction=0.2)
    ids = [ids_of(d) for d in (train, val, test)]
    assert sorted(np.concatenate(ids)) == list(range(30)) and [len(i) for i in ids] == [18, 6, 6]
    assert info.channels == 1  # all grayscale: kept so
    for cache in (True, False):  # with the size given: decoded while checked and held in memory, or streamed
        *splits, info = load(tmp_path, val_fraction=0.2, test_fraction=0.2, image_size=4, channels=3, cache=cache)
        assert [ids_of(d).tolist() for d in splits] == [i.tolist() for i in ids] and info.channels == 3
        for x, y in map(epoch, splits):
            assert np.array_equal(x[:, 0, 0, 0] // 10, y)  # each image keeps its label


def test_model_turns_grayscale_into_rgb_and_rgb_into_luminance(tmp_path):
    save(tmp_path / "gray" / "1.png", fill((10, 12), 40))
    save(tmp_path / "red" / "1.png", np.dstack([fill((10, 12), 255), fill((10, 12), 0), fill((10, 12), 0)]))
    rgb, _, _, info = load(tmp_path, model=model_for((32, 32, 3)), val_fraction=0, test_fraction=0)
    x, y = epoch(rgb)
    assert x.shape == (2, 32, 32, 3) and info.input_shape == (32, 32, 3)
    assert np.allclose(x[y == 0], 40)
    gray, _, _, info = load(tmp_path, model=model_for((32, 32, 1)), val_fraction=0, test_fraction=0)
    x, y = epoch(gray)
    assert x.shape == (2, 32, 32, 1) and info.channels == 1
    assert np.allclose(x[y == 1], 0.299 * 255, atol=1.5)  # luminance of pure red
    assert np.all(x[y == 0] == 40)  # gray stays itself


def test_a_grayscale_model_reads_every_gray_level_exactly(tmp_path):
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    save(tmp_path / "gray" / "ramp.png", ramp)
    save(tmp_path / "gray" / "ramp_alpha.png", np.dstack([ramp, fill((16, 16), 9)]))
    save(tmp_path / "rgb" / "1.png", np.dstack([ramp, ramp, ramp]))
    x, y = epoch(load(tmp_path, model=model_for((16, 16, 1)), val_fraction=0, test_fraction=0, shuffle=False)[0])
    assert np.array_equal(x[..., 0], np.broadcast_to(ramp, (3, 16, 16)))


def test_alpha_is_dropped_unless_the_model_takes_four_channels(tmp_path):
    for name in ("a", "b"):
        save(tmp_path / name / "1.png", np.dstack([fill((6, 6, 3), 80), fill((6, 6), 7)]))
    rgb, _, _, info = load(tmp_path, val_fraction=0, test_fraction=0)
    assert info.channels == 3 and np.all(epoch(rgb)[0] == 80)
    rgba, _, _, info = load(tmp_path, model=model_for((6, 6, 4)), val_fraction=0, test_fraction=0)
    assert info.channels == 4 and np.all(epoch(rgba)[0][..., 3] == 7)
    with pytest.raises(InvalidArgumentError, match="channels=2"):
        load(tmp_path, channels=2)


def test_corrupt_and_non_image_files_are_skipped_with_a_warning(folder):
    for good, broken in (("a.png", "broken.png"), ("deep/er/c.jpg", "broken.jpg")):
        data = (folder / "cat" / good).read_bytes()
        (folder / "cat" / broken).write_bytes(data[: len(data) // 2])  # truncated
    (folder / "dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"broken\.jpg.*broken\.png.*notes\.txt"):
        train, _, _, info = load(folder, val_fraction=0, test_fraction=0)
    assert {p.rsplit("/", 1)[-1] for p in info.skipped} == {"broken.jpg", "broken.png", "notes.txt"}
    assert len(epoch(train)[1]) == 8 == info.num_examples["train"]
    with pytest.raises(DataError, match=r"broken\.png"):
        load(folder, strict=True)


def test_folder_classes_in_a_new_order(folder):
    train, _, _, info = load(folder, classes=["dog", "cat"], val_fraction=0, test_fraction=0)
    x, y = epoch(train)
    assert info.class_names == ("dog", "cat")
    assert np.allclose(np.sort(x[y == 0].mean(axis=(1, 2, 3))), [30, 60, 90, 250], atol=2)  # dog is 0 now


# Splits made from train -----------------------------------------------------------------------


def assert_partition(ids, n):
    assert sorted(np.concatenate(list(ids.values()))) == list(range(n))  # no example in two splits, none lost


@pytest.mark.parametrize(
    "counts, val_fraction, test_fraction",
    [([100, 60, 40], 0.1, 0.25), ([37, 23, 11, 5], 0.15, 0.2), ([500, 7, 3], 0.3, 0.3)],
)
def test_made_splits_hold_each_class_in_proportion(counts, val_fraction, test_fraction):
    counts = np.array(counts)
    y = np.repeat(np.arange(len(counts)), counts)
    n = len(y)
    ids, info = split_ids((id_images(range(n)), y), val_fraction=val_fraction, test_fraction=test_fraction)
    assert_partition(ids, n)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    assert info.num_examples == {"train": n - n_val - n_test, "validation": n_val, "test": n_test}
    val = np.bincount(y[ids["validation"]], minlength=len(counts))
    share = counts * n_val / n
    assert (np.floor(share) <= val).all() and (val <= np.ceil(share)).all()
    test = np.bincount(y[ids["test"]], minlength=len(counts))
    share = (counts - val) * n_test / (n - n_val)  # test is cut from what validation left
    assert (np.floor(share) <= test).all() and (test <= np.ceil(share)).all()


def test_exact_class_counts_in_each_split():
    y = np.repeat([0, 1, 2], [100, 60, 40])
    ids, _ = split_ids((id_images(range(200)), y), val_fraction=0.1, test_fraction=0.25)
    counts = {name: np.bincount(y[i], minlength=3).tolist() for name, i in ids.items()}
    assert counts == {"train": [65, 39, 26], "validation": [10, 6, 4], "test": [25, 15, 10]}


def test_zero_fractions_make_no_split():
    y = np.arange(30) % 3
    xy = (id_images(range(30)), y)
    ids, info = split_ids(xy, val_fraction=0, test_fraction=0)
    assert sorted(ids["train"]) == list(range(30))
    assert info.num_examples == {"train": 30, "validation": 0, "test": 0}
    for fractions, empty, made in (((0, 0.2), "validation", "test"), ((0.2, 0), "test", "validation")):
        ids, _ = split_ids(xy, val_fraction=fractions[0], test_fraction=fractions[1])
        assert_partition(ids, 30)
        assert len(ids[empty]) == 0 and np.bincount(y[ids[made]]).tolist() == [2, 2, 2]
    own_test = (id_images(range(100, 106)), np.arange(6) % 3)
    ids, info = split_ids((xy, own_test), val_fraction=0)
    assert sorted(ids["train"]) == list(range(30)) and sorted(ids["test"]) == list(range(100, 106))
    assert info.num_examples["validation"] == 0


def test_classes_of_one_example_stay_in_train():
    y = np.repeat([0, 1, 2, 3], [1, 1, 10, 10])  # scikit-learn refuses to stratify a class of one
    ids, info = split_ids((id_images(range(22)), y), val_fraction=0.1, test_fraction=0.1)
    assert_partition(ids, 22)
    assert info.num_examples == {"train": 18, "validation": 2, "test": 2}
    assert {0, 1} <= set(ids["train"]) and set(y[ids["train"]]) == {0, 1, 2, 3}
    ids, info = split_ids((id_images(range(4)), np.arange(4)), val_fraction=0.25, test_fraction=0.25)
    assert sorted(ids["train"]) == [0, 1, 2, 3]  # nothing to spare: no split made
    assert info.num_examples == {"train": 4, "validation": 0, "test": 0}


@pytest.mark.parametrize(
    "val_fraction, test_fraction, sizes",
    [(0.1, 0.1, [8, 1, 1]), (0.2, 0.2, [6, 2, 2]), (0.4, 0.4, [5, 4, 1])],
)
def test_folder_with_two_images_per_class_keeps_every_class_in_train(
    tmp_path, val_fraction, test_fraction, sizes
):
    for c in range(5):
        for i in range(2):
            save(tmp_path / f"class{c}" / f"{i}.png", fill((4, 4), 2 * c + i))  # id // 2 is the class
    ids, info = split_ids(tmp_path, val_fraction=val_fraction, test_fraction=test_fraction)
    assert_partition(ids, 10)
    assert set(ids["train"] // 2) == set(range(5))
    assert list(info.num_examples.values()) == sizes  # held out from the spare second images only


def test_stratified_split_never_takes_a_whole_class_from_train():
    y = np.repeat([0, 1, 2], [9, 9, 2])  # a stratified 10-of-14 test cut would leave class 2 no example
    ids, _ = split_ids((id_images(range(20)), y), val_fraction=0.3, test_fraction=0.5)
    assert_partition(ids, 20)
    assert set(y[ids["train"]]) == {0, 1, 2}


@pytest.mark.parametrize(
    "counts, kwargs",
    [([30, 20, 10], {"val_fraction": 0.2, "test_fraction": 0.2}),
     ([1, 2, 2, 15], {"val_fraction": 0.2, "test_fraction": 0.2}),  # the fallback
     ([30, 20, 10], {"val_fraction": 0, "test_fraction": 0, "per_class": 3})],
)
def test_splits_repeat_for_a_seed_and_change_with_it(counts, kwargs):
    y = np.repeat(np.arange(len(counts)), counts)
    xy = (id_images(range(len(y))), y)
    first, _ = split_ids(xy, seed=7, **kwargs)
    again, _ = split_ids(xy, seed=7, **kwargs)
    assert all(np.array_equal(first[name], again[name]) for name in SPLITS)
    other, _ = split_ids(xy, seed=8, **kwargs)
    changed = "train" if "per_class" in kwargs else "validation"
    assert set(other[changed]) != set(first[changed])


# Augmentation and determinism -----------------------------------------------------------------


def test_augmentation_changes_train_only_and_repeats_under_a_seed():
    rng = np.random.default_rng(0)
    xy = (rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), np.arange(40) % 2)
    train, val, test, _ = load(xy, augment="light", seed=3, batch_size=8)
    first, second = epoch(train), epoch(train)
    assert not np.array_equal(first[0], second[0])  # new order and new augmentation each epoch
    plain_train, plain_val, plain_test, _ = load(xy, seed=3, batch_size=8)
    for ds, plain in ((val, plain_val), (test, plain_test)):
        assert np.array_equal(epoch(ds)[0], epoch(ds)[0]) and np.array_equal(epoch(ds)[0], epoch(plain)[0])
    plain = epoch(plain_train)
    assert np.array_equal(first[1], plain[1]) and not np.allclose(first[0], plain[0])  # same order, augmented
    again = epoch(load(xy, augment="light", seed=3, batch_size=8)[0])
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
    other = epoch(load(xy, augment="light", seed=4, batch_size=8)[0])
    assert not np.array_equal(other[1], first[1])


def test_strong_augmentation_on_grayscale_stays_in_range():
    train, _, _, _ = load("digits", augment="strong", classes=[0, 1], per_class=8, batch_size=16)
    x, _ = epoch(train)
    assert x.shape == (16, 8, 8, 1) and 0 <= x.min() and x.max() <= 255.5


def test_without_shuffle_train_order_is_fixed():
    xy = (id_images(range(30)), np.arange(30) % 3)
    train, _, _, _ = load(xy, shuffle=False, cache=False)
    assert np.array_equal(ids_of(train), ids_of(train))


# Bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(model=model_for((32, 32, 3)), image_size=(16, 16)), InvalidArgumentError, "conflicts"),
        (dict(model=model_for((32, 32, 3)), channels=1), InvalidArgumentError, "conflicts"),
        (dict(augment="wild"), InvalidArgumentError, "wild"),
        (dict(val_fraction=0.5, test_fraction=0.5), InvalidArgumentError, "sum to less than 1"),
        (dict(classes=[3, 42]), DataError, "42"),
        (dict(classes=[3]), InvalidArgumentError, "two"),
        (dict(num_classes=5), InvalidArgumentError, "num_classes=5"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load("digits", **kwargs)


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        ((np.zeros((10, 4, 4)), np.arange(9)), {}, "10 images but y holds 9"),
        ((np.zeros((4, 4, 4)), np.array([0, 1, 5, 1])), dict(num_classes=3), "label 5"),
        ((np.zeros((4, 4, 4)), np.array([0, 1, -1, 1])), {}, "label -1"),
        ((np.zeros((4, 4, 4)), np.eye(4)), {}, "one-hot"),
        (np.zeros((4, 4, 4)), {}, r"\(x, y\)"),
        ("no/such/folder", {}, "no/such/folder"),
    ],
)
def test_bad_data(source, kwargs, match):
    with pytest.raises(DataError, match=match):
        load(source, **kwargs)


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="0 class folder"):
        load(tmp_path)
    save(tmp_path / "only" / "1.png", fill((4, 4), 0))
    with pytest.raises(DataError, match="1 class folder"):
        load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        load(tmp_path)
    assert issubclass(DataError, ZooError)
