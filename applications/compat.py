"""Every private Keras name that applications/ uses, in one place, version-gated.

applications/ must not import zoo, so it has its own compatibility module (zoo's is ``zoo/compat.py``);
nothing else in applications/ may use a private name (tests/test_compat.py checks).

The gate: ``KERAS_CHECKED`` is the ``[from, to)`` range the uses below were checked on. Outside it
importing this module warns once, and each use does what its docstring says.
"""
from __future__ import annotations

import collections
import contextlib
import warnings
from collections.abc import Iterator

import keras

KERAS_CHECKED = ((3, 15), (3, 16))  # checked on Keras 3.15.1

_KERAS_VERSION = tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in keras.__version__.split(".")[:2])
KERAS_OK = KERAS_CHECKED[0] <= _KERAS_VERSION < KERAS_CHECKED[1]
if not KERAS_OK:
    warnings.warn(
        f"applications/compat.py resets Keras's private layer-name counters, checked on Keras "
        f"{KERAS_CHECKED[0][0]}.{KERAS_CHECKED[0][1]}; this is Keras {keras.__version__}: if they are gone, "
        f"keras.applications backbones get session-dependent layer names", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def fresh_layer_names() -> Iterator[None]:
    """No public reset of auto layer names short of clear_session: private global_state; checked Keras 3.15.1.

    Inside the block auto-named layers are numbered from zero, as in a new session ("re_lu_7" is the
    same layer whatever was built before); the counters are restored on exit. Without the private
    state (a later Keras) it warns and numbers as Keras does (catalog stage names may then not match).
    """
    try:
        from keras.src.backend.common import global_state  # private: naming's session-wide counters
    except ImportError:
        global_state = None
    if global_state is None or not hasattr(global_state, "get_global_attribute"):
        warnings.warn(f"Keras {keras.__version__} has no keras.src.backend.common.global_state: layer names of "
                      f"keras.applications backbones depend on what was built before", RuntimeWarning, stacklevel=3)
        yield
        return
    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved or collections.defaultdict(int))
