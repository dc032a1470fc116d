"""The strategy switch: data-parallel training with tf.distribute, and what it changes in a run.

``batch_size`` is always the *global* batch: ``batch_plan`` splits it over the replicas and
scales the learning rate if asked. Multi-worker training needs two small Keras patches
(keras issue 20585), applied by ``strategy("multi_worker")``.

Example:
    >>> from zoo import distribute
    >>> s = distribute.strategy("auto")
    >>> plan = distribute.batch_plan(s, batch_size=64, learning_rate=1e-3, scale_rule="linear")
    >>> with s.scope():
    ...     model = zoo.create_model("resnet_tiny", num_classes=10, pretrained=False)
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from pathlib import Path

import keras
import tensorflow as tf

from zoo import compat, config
from zoo.compat import MULTI_WORKER_BROKEN, patch_keras_for_multi_worker  # noqa: F401  (public here, kept in compat)
from zoo.errors import InvalidArgumentError

NAMES = config.STRATEGIES
KERAS_DISTRIBUTION_NAMES = ("keras_data_parallel", "data_parallel", "keras.distribution", "keras_distribution")
SCALE_RULES = (None, *config.LR_SCALING)


def strategy(name: str = "auto", devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The tf.distribute strategy called ``name``; build and compile the model under its ``scope()``.

    Names: ``auto`` (a TPU if there is one, else ``mirrored`` over 2+ GPUs, else ``off``), ``off``
    (the default strategy), ``one_device``, ``mirrored`` (all GPUs, or ``devices``),
    ``multi_worker`` (one process per worker, each with its own ``TF_CONFIG``; see ``tf_config``)
    and ``tpu``.

    Example:
        >>> s = strategy("mirrored", ["/gpu:0", "/gpu:1"])
        >>> s.num_replicas_in_sync
        2
    """
    if name in KERAS_DISTRIBUTION_NAMES:
        raise InvalidArgumentError(
            f"strategy '{name}' would use keras.distribution, which only distributes on the JAX backend "
            f"(on TensorFlow it trains on one device): use 'mirrored' for data parallel training")
    if name not in NAMES:
        raise InvalidArgumentError(f"unknown strategy '{name}': use one of {', '.join(NAMES)}")
    if devices is not None and name not in ("mirrored", "one_device"):
        raise InvalidArgumentError(f"devices only applies to 'mirrored' and 'one_device', not to '{name}'")

    if name == "auto":
        resolver = _find_tpu()
        if resolver is not None:
            return _tpu_strategy(resolver)
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        if devices is not None and len(devices) != 1:
            raise InvalidArgumentError(f"one_device takes one device, got {len(devices)}: "
                                       f"use 'mirrored' for several")
        gpus = tf.config.list_logical_devices("GPU")
        device = _check_devices(devices)[0] if devices else (gpus[0].name if gpus else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_check_devices(devices) if devices is not None else None)
    if name == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        try:
            multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # TF refuses once its runtime has started
            raise InvalidArgumentError(f"cannot start multi-worker training ({e}): create the strategy "
                                       f"first, before any other TensorFlow work in the process") from e
        patch_keras_for_multi_worker()
        return multi_worker
    return _tpu_strategy(_find_tpu(required=True))


def _find_tpu(required: bool = False):
    """A TPUClusterResolver, or None. Without a sign of a TPU it asks nothing, so it is quick and quiet."""
    named = any(os.environ.get(k) for k in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"))
    if not (named or required or glob.glob("/dev/accel*")):  # /dev/accel*: a TPU VM's chips
        return None
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if named else "local")
    except (ValueError, RuntimeError) as e:
        if required:
            raise InvalidArgumentError(f"cannot find the TPU that TPU_NAME or TPU_CONFIG names ({e}): "
                                       f"check them") from e
        return None


def _tpu_strategy(resolver) -> tf.distribute.Strategy:
    try:
        if resolver.master():  # a remote TPU; a TPU VM's own chips need no connection
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        reason = str(e).splitlines()[0]
        raise InvalidArgumentError(f"cannot start a TPU ({reason}): run on a TPU VM or set TPU_NAME to your "
                                   f"TPU's name, or use strategy 'auto'") from e
    return tf.distribute.TPUStrategy(resolver)


def _check_devices(devices: list[str]) -> list[str]:
    """The devices, each checked against this process's logical devices."""
    have = {(d.device_type, int(d.name.rsplit(":", 1)[1])) for d in tf.config.list_logical_devices()}
    names = ", ".join(sorted(f"{t}:{i}" for t, i in have))
    if not devices:
        raise InvalidArgumentError(f"devices is empty: name at least one of {names}, or pass devices=None")
    seen = set()
    for device in devices:
        try:
            spec = tf.DeviceSpec.from_string(device)
            key = ((spec.device_type or "").upper(), spec.device_index or 0)
        except ValueError:
            key = None
        if key not in have:
            raise InvalidArgumentError(f"no device '{device}' in this process: use some of {names}")
        if key in seen:
            raise InvalidArgumentError(f"device '{device}' is named twice: name each device once")
        seen.add(key)
    return list(devices)


def tf_config(workers: str | list[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON for worker ``index`` of ``workers``; set it in that worker's environment.

    Worker 0 is the chief: it writes the run directory.

    Example:
        >>> os.environ["TF_CONFIG"] = tf_config("host1:12345,host2:12345", index=0)
    """
    hosts = [w.strip() for w in workers.split(",")] if isinstance(workers, str) else list(workers)
    config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
    _check_tf_config(config)
    return config


def _check_tf_config(text: str | None) -> None:
    hint = "set it on each worker, e.g. to zoo.distribute.tf_config('host1:port,host2:port', index=i)"
    if not text:
        raise InvalidArgumentError(f"strategy 'multi_worker' reads the cluster from TF_CONFIG, which is not set: "
                                   f"{hint}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"TF_CONFIG is not JSON ({e}): {hint}") from e
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise InvalidArgumentError(f"TF_CONFIG needs a 'cluster' and a 'task': {hint}")
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts:
            raise InvalidArgumentError(f"TF_CONFIG cluster job '{job}' needs a list of 'host:port': {hint}")
        for host in hosts:
            if not isinstance(host, str) or not host.rpartition(":")[2].isdigit() or not host.rpartition(":")[0]:
                raise InvalidArgumentError(f"TF_CONFIG address {host!r} is not 'host:port': {hint}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise InvalidArgumentError(f"TF_CONFIG task type {kind!r} is not a job of the cluster "
                                   f"({', '.join(cluster)}): {hint}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise InvalidArgumentError(f"TF_CONFIG task index {index!r} is out of range: job '{kind}' has "
                                   f"{len(cluster[kind])} workers, numbered from 0")


def _task(strategy: tf.distribute.Strategy) -> tuple[str, int] | None:
    """This process's (task type, index) in a multi-worker cluster; None for a single process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    return (resolver.task_type or "worker", resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True in the one process that writes the run directory and checkpoints.

    That is worker 0 (or the ``chief`` task, if the cluster has one), and every single-process run.

    Example:
        >>> if is_chief(s): model.save(run_dir / "model.keras")
    """
    task = _task(strategy)
    if task is None:
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task[0] == "chief" or (task == ("worker", 0) and "chief" not in cluster)


def backup_dir(run_dir: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """This process's ``keras.callbacks.BackupAndRestore`` directory: ``run_dir/backup``, and one
    ``run_dir/backup/<task>-<index>`` per worker, since workers sharing one crash.

    Example:
        >>> keras.callbacks.BackupAndRestore(backup_dir(run_dir, s))
    """
    task = _task(strategy)
    path = Path(run_dir) / "backup"
    return path if task is None else path / f"{task[0]}-{task[1]}"


def sync_batchnorm(model: keras.Model) -> int:
    """Make every BatchNormalization layer use the global batch's statistics across replicas.

    It takes effect from the next ``fit`` (the train step is traced again) and is saved with the
    model. Returns the number of layers changed.

    Example:
        >>> with s.scope():
        ...     model = zoo.create_model("resnet50", num_classes=5)
        ...     sync_batchnorm(model)
        ...     model.compile(...)
    """
    layers = [layer for layer in compat.flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True  # read when the moments are computed, i.e. at trace time
    model.train_function = None  # so the next fit traces the step again
    return len(layers)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a global batch splits over the replicas, and the learning rate that goes with it."""

    replicas: int
    global_batch_size: int
    per_replica_batch_size: int
    base_learning_rate: float
    learning_rate: float
    scale_rule: str | None
    base_batch_size: int
    warmup_epochs: int

    def describe(self) -> str:
        """One line for the run log.

        Example:
            >>> print(batch_plan(2, batch_size=64, learning_rate=0.1, scale_rule="linear").describe())
            2 replicas x 32 = global batch 64; learning rate 0.1 -> 0.2 (linear scaling from batch 32); warm up 1 epoch
        """
        text = (f"{self.replicas} replica{'s' if self.replicas > 1 else ''} x {self.per_replica_batch_size} "
                f"= global batch {self.global_batch_size}; learning rate {self.base_learning_rate:g}")
        if self.scale_rule:
            text += (f" -> {self.learning_rate:g} ({self.scale_rule} scaling from batch "
                     f"{self.base_batch_size})")
        if self.warmup_epochs:
            text += f"; warm up {self.warmup_epochs} epoch{'s' if self.warmup_epochs > 1 else ''}"
        return text

    def as_dict(self) -> dict:
        """The plan as plain values, for the run's config."""
        return dataclasses.asdict(self)


def batch_plan(
    strategy: tf.distribute.Strategy | int,
    batch_size: int | None = None,
    per_replica_batch_size: int | None = None,
    learning_rate: float = 1e-3,
    scale_rule: str | None = None,
    base_batch_size: int | None = None,
) -> BatchPlan:
    """Split the global ``batch_size`` (or build it from ``per_replica_batch_size``) over the replicas.

    ``learning_rate`` is the rate tuned at ``base_batch_size`` (default: the per-replica batch,
    i.e. one device). ``scale_rule`` ``"linear"`` multiplies it by global/base batch (Goyal et al.
    2017), ``"sqrt"`` by the square root of that; the plan then warms up for one epoch per
    doubling, up to 5 (``zoo.finetune`` applies it: at least that many epochs of linear warm-up).
    Neither batch option means Keras's default global batch of 32.

    Example:
        >>> batch_plan(4, per_replica_batch_size=32, learning_rate=0.1, scale_rule="linear").learning_rate
        0.4
    """
    replicas = strategy if isinstance(strategy, int) else strategy.num_replicas_in_sync
    if batch_size is not None and per_replica_batch_size is not None:
        raise InvalidArgumentError("give batch_size (the global batch) or per_replica_batch_size, not both")
    for option, value in (("batch_size", batch_size), ("per_replica_batch_size", per_replica_batch_size),
                          ("base_batch_size", base_batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{option} must be a positive integer, got {value!r}")
    if scale_rule not in SCALE_RULES:
        raise InvalidArgumentError(f"unknown scale_rule {scale_rule!r}: use 'linear', 'sqrt' or None")
    if not learning_rate > 0:
        raise InvalidArgumentError(f"learning_rate must be positive, got {learning_rate!r}")

    global_batch = per_replica_batch_size * replicas if per_replica_batch_size else batch_size or 32
    if global_batch < replicas:
        raise InvalidArgumentError(f"the global batch_size {global_batch} is smaller than the {replicas} replicas: "
                                   f"use batch_size >= {replicas} (it is split over the replicas)")
    if global_batch % replicas:
        lower = global_batch - global_batch % replicas
        raise InvalidArgumentError(f"the global batch_size {global_batch} does not split evenly over {replicas} "
                                   f"replicas: use {lower} or {lower + replicas}")
    per_replica = global_batch // replicas
    base = base_batch_size or per_replica
    factor = {None: 1.0, "linear": global_batch / base, "sqrt": math.sqrt(global_batch / base)}[scale_rule]
    warmup = min(5, math.ceil(math.log2(factor))) if factor > 1 else 0
    return BatchPlan(replicas=replicas, global_batch_size=global_batch, per_replica_batch_size=per_replica,
                     base_learning_rate=learning_rate, learning_rate=learning_rate * factor,
                     scale_rule=scale_rule, base_batch_size=base, warmup_epochs=warmup)
