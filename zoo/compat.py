"""Every private Keras and TensorFlow name that zoo and tuning use, in one place, version-gated.

Keras 3 and TensorFlow keep a few things zoo needs behind private names (``keras.src``,
``tensorflow.python``, underscore attributes). Each is used here only, in one function whose
docstring says which public API is missing, why the private name is used, and on which versions it
was checked; nothing else in zoo/ or tuning/ may use one (tests/test_compat.py checks).
applications/ has its own, ``applications/compat.py``, since it must not import zoo.

The gate: ``KERAS_CHECKED`` and ``TF_CHECKED`` are the ``[from, to)`` ranges every use below was
checked on. Outside them importing this module warns once, and each use does what its docstring
says: a private name that is still there is used, one that is gone falls back to public code, does
nothing, or raises ``UnsupportedVersionError`` naming the function. ``MULTI_WORKER_BROKEN`` is
separate: the Keras versions whose trainer needs the multi-worker patches (read at call time).
"""
from __future__ import annotations

import collections
import os
import warnings

import keras
import tensorflow as tf

from zoo.errors import ZooError

KERAS_CHECKED = ((3, 15), (3, 16))  # every use below checked on Keras 3.15.1
TF_CHECKED = ((2, 21), (2, 22))  # ... and TensorFlow 2.21.0
# Keras versions whose TensorFlow trainer breaks under MultiWorkerMirroredStrategy (keras issue 20585).
# Checked through 3.15; widen the range after running the slow multi-worker tests on a new release.
MULTI_WORKER_BROKEN = ((3, 0), (3, 16))
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"  # tf.custom_gradient's registry names (custom_gradient.generate_name)


class UnsupportedVersionError(ZooError):
    """A private Keras/TF name zoo needs is gone in this version, and nothing public replaces it."""


def version(text: str) -> tuple[int, int]:
    """``"3.15.1"`` -> ``(3, 15)`` (``"2.22.0rc1"`` -> ``(2, 22)``)."""
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _within(text: str, bounds: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return bounds[0] <= version(text) < bounds[1]


def version_warning(keras_version: str, tf_version: str) -> str | None:
    """The warning for versions outside ``KERAS_CHECKED`` / ``TF_CHECKED``; None inside them."""
    keras_ok, tf_ok = _within(keras_version, KERAS_CHECKED), _within(tf_version, TF_CHECKED)
    if keras_ok and tf_ok:
        return None
    return (f"keras-zoo's uses of private Keras/TensorFlow names (zoo/compat.py) were checked on Keras "
            f"{KERAS_CHECKED[0][0]}.{KERAS_CHECKED[0][1]} and TensorFlow {TF_CHECKED[0][0]}.{TF_CHECKED[0][1]}; "
            f"this is Keras {keras_version} and TensorFlow {tf_version}: private names still present are used, "
            f"the others fall back or fail as zoo/compat.py says"
            + ("" if tf_ok else "; zoo.memory.released() will not drop TF's custom gradients"))


KERAS_OK = _within(keras.__version__, KERAS_CHECKED)
TF_OK = _within(tf.__version__, TF_CHECKED)  # gates gradient_registry: outside it, memory release is gc only
if version_warning(keras.__version__, tf.__version__):
    warnings.warn(version_warning(keras.__version__, tf.__version__), RuntimeWarning, stacklevel=2)


def _unsupported(what: str, public: str) -> UnsupportedVersionError:
    return UnsupportedVersionError(
        f"{what} needs a private Keras name that Keras {keras.__version__} no longer has ({public}); "
        f"keras-zoo was checked on Keras {KERAS_CHECKED[0][0]}.{KERAS_CHECKED[0][1]}: install that, or "
        f"update zoo/compat.py")


# ---------------------------------------------------------------- keras: paths

def keras_home() -> str:
    """No public getter for Keras's home (get_file's cache): private config.keras_home(); checked Keras 3.15.1.

    Falls back to Keras's own rule (``$KERAS_HOME``, else ``~/.keras``, else ``/tmp/.keras``) if it is gone.
    """
    try:
        from keras.src.backend.config import keras_home as private  # private: no public accessor
    except ImportError:
        if "KERAS_HOME" in os.environ:
            return os.environ["KERAS_HOME"]
        base = os.path.expanduser("~")
        return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return private()


# ---------------------------------------------------------------- keras: layers and optimizers

def flatten_layers(layer, include_self: bool = True) -> list:
    """No public recursive layer walk (Model.layers is one level): private Layer._flatten_layers; checked Keras 3.15.1.

    Falls back to walking ``.layers`` and layer-valued attributes if ``_flatten_layers`` is gone.
    """
    if hasattr(layer, "_flatten_layers"):
        return layer._flatten_layers(include_self=include_self)  # private: no public recursive walk
    return walk_layers(layer, include_self)


def sublayers(layer) -> list:
    """A layer's direct sublayers, in the order it made them: private ``_flatten_layers(recursive=False)``
    (a keras-hub encoder holds its blocks in attributes, with no public list); checked Keras 3.15.1."""
    if hasattr(layer, "_flatten_layers"):
        return list(layer._flatten_layers(include_self=False, recursive=False))  # private: see above
    return _children(layer)


def walk_layers(layer, include_self: bool = True) -> list:
    """``flatten_layers`` from public attributes only (``.layers``, layer-valued attributes): its fallback."""
    found, seen = [layer] if include_self else [], {id(layer)}
    todo = collections.deque(_children(layer))
    while todo:
        sub = todo.popleft()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        found.append(sub)
        todo.extendleft(reversed(_children(sub)))
    return found


def _children(layer) -> list:
    """Direct sublayers: a model's ``.layers``, else the layers a layer holds in its attributes."""
    if isinstance(getattr(layer, "layers", None), list):
        return list(layer.layers)
    children = []
    for value in vars(layer).values():
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        children += [v for v in values if isinstance(v, keras.layers.Layer)]
    return children


def variable_index(optimizer: keras.optimizers.Optimizer, variable) -> int:
    """No public variable -> index map in update_step: private Optimizer._get_variable_index; checked Keras 3.15.1.

    The TF backend passes ``update_step`` the raw (possibly distributed) tf.Variable; this maps it to
    its position in the list ``build`` got, as Keras's own slot lookup does. Raises
    ``UnsupportedVersionError`` if it is gone (per-layer learning rates cannot be applied).
    """
    if not hasattr(optimizer, "_get_variable_index"):
        raise _unsupported("per-layer learning-rate multipliers", "Optimizer._get_variable_index")
    return optimizer._get_variable_index(variable)  # private: keyed like Keras's own slot lookup


def build_for_fit(model: keras.Model, element_spec) -> None:
    """Build a compiled model's metrics, loss and optimizer before ``fit``: private Trainer._symbolic_build.

    Without a distribution strategy, Keras 3.15's TensorFlow trainer defers this to the first trace of the
    train step; the metric variables are then created inside that trace, and TensorFlow traces the whole
    step a second time without them (seconds for a ViT on a CPU, once per ``compile``). Checked Keras
    3.15.1; where the name is gone, ``fit`` builds as before, only slower.
    """
    if hasattr(model, "_symbolic_build"):
        batch = tf.nest.map_structure(lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), element_spec)
        model._symbolic_build(data_batch=batch)  # private: what fit does itself under a strategy


def hub_file(handle: str, name: str) -> str:
    """One file of a hub checkpoint, downloaded into keras-hub's own cache: private
    keras_hub.src.utils.preset_utils.get_file (keras-hub has no public download); checked keras-hub 0.32.0."""
    try:
        from keras_hub.src.utils.preset_utils import get_file
    except ImportError as e:
        raise _unsupported("downloading hub checkpoints", "keras_hub preset_utils.get_file") from e
    return get_file(handle, name)  # private: what Backbone.from_preset downloads through


# ---------------------------------------------------------------- keras: multi-worker training

def patch_keras_for_multi_worker() -> bool:
    """No public fix or hook for keras issue 20585: patches private keras.src trainer; checked Keras 3.15.1, TF 2.21.0.

    Patches only the Keras versions in ``MULTI_WORKER_BROKEN`` (read at call time) and returns True;
    other versions are left alone (False). Calling it twice patches once.
    1. The symbolic build reduces the first *data batch* across workers, which fails on a
       PerReplica batch: it only needs shapes, so it takes this worker's first replica's batch.
    2. Metrics are reduced with ``axis=0``, which fails on scalars: they are averaged over
       the replicas, as every other strategy does.
    """
    if not _within(keras.__version__, MULTI_WORKER_BROKEN):
        return False
    from keras.src.backend.tensorflow import trainer  # private: the code being patched

    if getattr(trainer.reduce_per_replica, "zoo_patched", False):
        return True
    build, reduce_per_replica = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if iterator is not None and multi_worker(strategy):
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0],
                                                      next(batches))
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    def _reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    _reduce_per_replica.zoo_patched = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = _reduce_per_replica  # looked up at call time by the train and test steps
    return True


# ---------------------------------------------------------------- tensorflow: the gradient registry

def gradient_registry() -> dict:
    """No public access to TF's gradient registry (name -> function): private ops._gradient_registry; checked TF 2.21.0.

    Empty (so callers do nothing) outside ``TF_CHECKED`` or if TF stops keeping it there.
    """
    if not TF_OK:
        return {}
    try:
        from tensorflow.python.framework import ops  # private: the registry has no public accessor
    except ImportError:
        return {}
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def custom_gradient_names() -> set[str]:
    """No public list of tf.custom_gradient's entries ("CustomGradient-N"): read the private registry (TF 2.21.0).

    Each graph-mode ``tf.custom_gradient`` call adds one that keeps its traced graph, and every model
    weight that graph captured, alive for good (tensorflow issue 97697); Keras's TF optimizer adds one
    with each train step it traces (its replica-context ``all_reduce`` of the gradients).
    """
    return {name for name in gradient_registry() if name.startswith(CUSTOM_GRADIENT_PREFIX)}


def drop_custom_gradients(keep: set[str]) -> int:
    """No public way to drop custom gradients (tensorflow issue 97697): delete private entries; checked TF 2.21.0.

    A graph traced before keeps working (its backward pass is already built); only a gradient taken
    later *through* such a graph (a ``tf.function`` traced earlier and differentiated from outside)
    would miss its entry. Does nothing where ``gradient_registry`` is empty. Returns how many it dropped.
    """
    registry = gradient_registry()
    gone = [name for name in list(registry) if name.startswith(CUSTOM_GRADIENT_PREFIX) and name not in keep]
    for name in gone:
        registry.pop(name, None)
    return len(gone)


def set_batches_seen(optimizer: keras.optimizers.Optimizer, batches: int) -> None:
    """Set how many batches an optimizer has seen (a run resumed without its optimizer state). With gradient
    accumulation the public ``iterations`` is computed (updates, not batches), so the private ``_iterations``
    it divides is set; checked Keras 3.15.1."""
    optimizer._iterations.assign(batches)  # private: see above


def swap_ema(optimizer: keras.optimizers.Optimizer, variables) -> None:
    """Swap the values of ``variables`` and the optimizer's moving averages of them (``use_ema``), as
    ``keras.callbacks.SwapEMAWeights`` does at an epoch's end. No public access to the averages: private
    ``Optimizer._model_variables_moving_average`` (in the order of the variables it was built with);
    checked Keras 3.15.1."""
    for variable, average in zip(variables, optimizer._model_variables_moving_average):  # private: see above
        if average is not None:
            value = variable.numpy()
            variable.assign(average)
            average.assign(value)
