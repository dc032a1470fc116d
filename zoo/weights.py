"""The weights store: resolve a tag to a verified local file.

Files live in Keras's own cache (``$KERAS_HOME/models``, as ``keras.utils.get_file`` stores them),
so weights a user already downloaded with keras.applications are reused. ``KERAS_ZOO_OFFLINE=1``
never touches the network.

Example:
    >>> from zoo import weights
    >>> path = weights.resolve("resnet50.imagenet")   # downloads once, then served from the cache
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zoo.catalog.keras_hub import hub_weights_file
from zoo.errors import WeightsError, WeightsHashError, WeightsNotFoundError
from zoo.files import atomic_copy
from zoo.registry import ModelSpec, WeightSpec
from zoo.registry import resolve as resolve_name

_PACKAGE_DIR = Path(__file__).resolve().parent / "pretrained"


def offline() -> bool:
    """True when ``KERAS_ZOO_OFFLINE`` is set to a true value."""
    return os.environ.get("KERAS_ZOO_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Keras's cache folder: ``KERAS_HOME`` as read when keras was imported, else ``~/.keras``."""
    from zoo import compat  # imports keras: only when a path is needed

    return Path(compat.keras_home())  # the one keras.utils.get_file uses


def local_path(weight: WeightSpec) -> Path:
    """Where a weights file lives (or will live) on this machine."""
    if weight.bundled:
        return _PACKAGE_DIR / weight.file_name
    return cache_dir() / weight.cache_subdir / weight.file_name


def local_checkpoint(weight: WeightSpec) -> Path | None:
    """The directory of a hub checkpoint that is on this machine (bundled or downloaded), else None."""
    path = local_path(weight)
    beside = hub_files(weight)[:-1]  # the config and the tokenizer's files; the weights file is ``path``
    return path.parent if path.is_file() and all((path.parent / name).is_file() for name in beside) else None


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def matches(path: str | os.PathLike, weight: WeightSpec) -> bool:
    """Whether a file has the catalog's hash (md5 for 32 hex digits, as Keras does, else sha256).

    A file whose publisher gives no hash matches by definition; ``model_info`` says so.
    """
    if weight.file_hash is None:
        return True
    algorithm = "md5" if len(weight.file_hash) == 32 else "sha256"
    return file_hash(path, algorithm) == weight.file_hash


def _import_hint(spec: ModelSpec, weight: WeightSpec) -> str:
    return f"keras-zoo weights import {weight.file_name} --model {spec.arch}.{weight.tag}"


def verify(spec: ModelSpec, weight: WeightSpec, path: Path) -> Path:
    """Return ``path`` if it holds the catalog's file, else raise WeightsHashError (it is never loaded)."""
    if not matches(path, weight):
        raise WeightsHashError(
            f"{path} does not match the hash of {spec.arch}.{weight.tag} ({weight.file_hash}): it was not "
            f"loaded; delete it and download again (`keras-zoo weights download {spec.arch}.{weight.tag}`) "
            f"or import the right file (`{_import_hint(spec, weight)}`)")
    return path


def resolve(name: str) -> Path:
    """The verified local file of ``arch.tag``, downloading it with a progress bar if needed.

    Offline, a missing file raises WeightsNotFoundError naming the file, its URL and the import command.
    """
    spec, weight = resolve_name(name)
    if weight is None:
        raise WeightsNotFoundError(f"{spec.arch} has no pretrained weights: use pretrained=False")
    return fetch(spec, weight)


def fetch(spec: ModelSpec, weight: WeightSpec) -> Path:
    """Like ``resolve`` for an already looked-up spec and weight."""
    path = local_path(weight)
    if path.exists():
        if not readable(path):
            raise WeightsError(f"{path} is damaged or partial: it was not loaded; delete it and download again "
                               f"(`keras-zoo weights download {spec.arch}.{weight.tag}`) or import the right file "
                               f"(`{_import_hint(spec, weight)}`)")
        return verify(spec, weight, path)
    if weight.bundled or weight.url is None or offline():
        reason = "KERAS_ZOO_OFFLINE is set" if offline() else "it has no download URL"
        raise WeightsNotFoundError(
            f"weights file {weight.file_name} for {spec.arch}.{weight.tag} is not in {path.parent} and "
            f"{reason}; download it from {weight.url} on a machine with internet, then run "
            f"`{_import_hint(spec, weight)}`")
    return verify(spec, weight, download(weight))


HUB_PREFIXES = ("hf://", "kaggle://")
HUB_OPTIONAL = ("preprocessor_config.json",)


def hub_files(weight: WeightSpec) -> tuple[str, ...]:
    """The files of a hub checkpoint keras-hub builds from: its config, its tokenizer's files where it has a
    tokenizer, and its weights file (last)."""
    return ("config.json", *weight.files, weight.file_name)


def download(weight: WeightSpec) -> Path:
    """Download into Keras's cache through ``keras.utils.get_file`` (progress bar, hash check); a hub
    checkpoint through keras-hub's own caches (Hugging Face's, Kaggle's), copied into the weights store."""
    import keras

    if weight.url.startswith(HUB_PREFIXES):
        try:
            for name in hub_files(weight):
                atomic_copy(_hub_file(weight, name), local_path(weight).parent / name)
        except Exception as e:  # keras-hub raises network, permission and missing-file errors alike
            raise WeightsNotFoundError(
                f"could not download {weight.url} ({e}); check the network, or fetch its "
                f"{' and '.join(hub_files(weight))} elsewhere and import the folder with `keras-zoo weights "
                f"import DIR --model ...`") from e
        return local_path(weight)

    try:
        got = keras.utils.get_file(weight.file_name, weight.url, cache_subdir=weight.cache_subdir,
                                   file_hash=weight.file_hash, cache_dir=str(cache_dir()))
    except Exception as e:  # get_file raises plain Exception for network and hash failures
        raise WeightsNotFoundError(
            f"could not download {weight.file_name} from {weight.url} ({e}); check the network, or fetch "
            f"the file elsewhere and import it with `keras-zoo weights import FILE --model ...`") from e
    return Path(got)


def _hub_file(weight: WeightSpec, name: str) -> str:
    """One file of a hub checkpoint in its hub's own cache: at the pinned revision through huggingface_hub
    (keras-hub's handles cannot name one), else through keras-hub."""
    if weight.revision:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(weight.url.removeprefix("hf://"), name, revision=weight.revision)
    from zoo import compat

    return compat.hub_file(weight.url, name)


def import_file(source: str | os.PathLike, name: str) -> Path:
    """Copy a weights file into the cache under the catalog's file name, after checking its hash.

    Example:
        >>> import_file("~/Downloads/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet50")
    """
    spec, weight = resolve_name(name)
    if weight is None:
        raise WeightsError(f"{spec.arch} has no weights tag to import into; give `arch.tag`")
    source = Path(source).expanduser()
    if source.is_dir() and (weight.url or "").startswith(HUB_PREFIXES):
        return _import_checkpoint(source, spec, weight)
    if not source.is_file():
        raise WeightsNotFoundError(f"no such file: {source}; give the path of the downloaded weights file")
    verify(spec, weight, source)
    return atomic_copy(source, local_path(weight))  # a reader never sees half a file, even after a crash


def hub_name(handle: str) -> tuple[str | None, Path | None]:
    """A hub handle as ``(catalog name, None)`` where an entry has it, else ``(None, checkpoint directory)``:
    the handle's files fetched into the store (``hub/<handle>``), once.

    Example:
        >>> hub_name("hf://facebook/dinov2-small")
        ('dinov2_small.lvd142m', None)
    """
    from zoo.registry import specs

    for spec in specs():
        for weight in spec.weights:
            if weight.url == handle:
                return f"{spec.arch}.{weight.tag}", None
    weight = WeightSpec(tag="hub", file_name=hub_weights_file(handle), url=handle,
                        cache_subdir="hub/" + handle.replace("://", "/").replace("/", "__"))
    directory = local_path(weight).parent
    if not local_path(weight).is_file():
        if offline():
            raise WeightsNotFoundError(
                f"{handle}: its {', '.join(hub_files(weight))} are not in {directory} and KERAS_ZOO_OFFLINE is set; "
                f"download them on a machine with internet and give create_model that folder")
        download(weight)
    return None, directory


def _import_checkpoint(source: Path, spec: ModelSpec, weight: WeightSpec) -> Path:
    """Copy a hub checkpoint directory into the store, after checking keras-hub builds this entry from it."""
    missing = [name for name in hub_files(weight) if not (source / name).is_file()]
    if missing:
        raise WeightsNotFoundError(f"{source} has no {', '.join(missing)}: give the folder of {weight.url}'s "
                                   f"files")
    from zoo.hub_config import architecture, read_config

    have, want = architecture(read_config(source)), architecture(spec.builder_kwargs.get("config", {}))
    differ = [f"{key} {have.get(key)}" for key in want if have.get(key) != want[key]]
    if differ:
        raise WeightsError(f"{source} holds another architecture than {spec.arch} ({', '.join(differ)}): give the "
                           f"folder of {weight.url}'s files")
    target = local_path(weight).parent
    for name in (*HUB_OPTIONAL, *hub_files(weight)):  # the weights file last: where it is, the checkpoint is whole
        if (source / name).is_file():
            atomic_copy(source / name, target / name)
    return target


def readable(path: str | os.PathLike) -> bool:
    """Whether a weights file can be read as what its name says: HDF5 for ``.h5``, a zip for ``.keras``."""
    name = str(path)
    if name.endswith(".h5"):
        import h5py  # no TensorFlow: a cheap look at the file's signature

        return bool(h5py.is_hdf5(name))
    if name.endswith(".keras"):
        import zipfile

        return zipfile.is_zipfile(name)
    if name.endswith(".safetensors"):
        return _whole_safetensors(Path(name))
    return True


def _whole_safetensors(path: Path) -> bool:
    """Whether a safetensors file is whole: its JSON header parses and the data it describes is all there
    (a partial download stops short of the last tensor's end)."""
    import json

    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        return path.stat().st_size == 8 + size + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def status(name: str) -> dict:
    """Where a tag's file is and whether it is present, verified (None: the publisher gives no hash) and
    readable, for ``keras-zoo weights list`` and ``verify``."""
    spec, weight = resolve_name(name)
    if weight is None:
        raise WeightsNotFoundError(f"{spec.arch} has no pretrained weights: nothing to look for "
                                   f"(`keras-zoo list --pretrained` lists the models that have some)")
    path = local_path(weight)
    present = path.is_file()
    return {"name": f"{spec.arch}.{weight.tag}", "path": str(path), "present": present,
            "verified": (matches(path, weight) if weight.file_hash else None) if present else None,
            "readable": readable(path) if present else None}
