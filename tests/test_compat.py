"""Private Keras/TF names live only in applications/compat.py and zoo/compat.py, behind version gates."""
import ast
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("applications", "zoo", "tuning")
COMPAT = {ROOT / "applications" / "compat.py", ROOT / "zoo" / "compat.py"}
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tf.python")
# private attributes of Keras/TF objects that zoo has needed; any use outside the compat modules is a leak
PRIVATE_NAMES = {"_flatten_layers", "_inbound_nodes", "_outbound_nodes", "_get_variable_index", "_var_key",
                 "_gradient_registry", "global_state", "_layers", "_tracker", "_trainable_variables"}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _private(module: str | None) -> bool:
    return module is not None and any(module == p or module.startswith(p + ".") for p in PRIVATE_MODULES)


def private_uses(path: Path) -> list[str]:
    """Every private Keras/TF name ``path`` uses: imports, dotted names, listed attributes, and strings
    naming them (getattr, importlib)."""
    found, name = [], path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            if _private(node.module) or any(_private(n) for n in names):
                found.append(f"{where} from {node.module} import {', '.join(a.name for a in node.names)}")
            found += [f"{where} import {a.name}" for a in node.names if a.name in PRIVATE_NAMES]
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE_NAMES:
                found.append(f"{where} .{node.attr}")
            elif _private(_dotted(node)) and not _private(_dotted(node.value)):
                found.append(f"{where} {_dotted(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in PRIVATE_NAMES or (_private(node.value.split()[0] if node.value.split() else "")
                                               and " " not in node.value.strip()):
                found.append(f"{where} {node.value!r}")
    return found


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_no_private_keras_or_tensorflow_name_outside_the_compat_modules():
    leaks = [use for path in sources() if path not in COMPAT for use in private_uses(path)]
    assert not leaks, "private Keras/TF names belong in zoo/compat.py or applications/compat.py:\n" + "\n".join(leaks)


def test_the_scan_finds_what_the_compat_modules_use(tmp_path):
    zoo_uses = " ".join(private_uses(ROOT / "zoo" / "compat.py"))
    for name in ("keras.src.backend.config", "keras.src.backend.tensorflow", "tensorflow.python.framework",
                 "._flatten_layers", "._get_variable_index", "_gradient_registry"):
        assert name in zoo_uses, name
    assert "keras.src.backend.common" in " ".join(private_uses(ROOT / "applications" / "compat.py"))
    probe = tmp_path / "probe.py"
    probe.write_text("import keras.src.tree\nfrom tensorflow.python.framework import ops\nimport keras\n"
                     "x = keras.src.utils\nmodel._inbound_nodes[0]\ngetattr(m, '_flatten_layers')\n"
                     "importlib.import_module('tensorflow.python.ops')\n'a keras.src sentence is fine'\n")
    assert len(private_uses(probe)) == 6, private_uses(probe)


def test_version_gates():
    from zoo import compat

    assert compat.version("3.15.1") == (3, 15) and compat.version("2.22.0rc1") == (2, 22)
    assert compat.KERAS_OK and compat.TF_OK  # the versions this checkout was checked on
    assert compat.version_warning(keras.__version__, "2.21.0") is None
    assert "Keras 3.16.0" in compat.version_warning("3.16.0", "2.21.0")
    assert "will not drop" in compat.version_warning("3.15.1", "2.22.0")
    assert "will not drop" not in compat.version_warning("3.16.0", "2.21.0")


def test_keras_home_falls_back_to_keras_rule_when_the_private_getter_is_gone(monkeypatch, tmp_path):
    from zoo import compat

    private = compat.keras_home()
    monkeypatch.setitem(sys.modules, "keras.src.backend.config", None)  # import raises ImportError
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert compat.keras_home() == str(tmp_path)
    monkeypatch.delenv("KERAS_HOME")
    assert compat.keras_home().endswith(".keras")
    monkeypatch.undo()
    assert compat.keras_home() == private


def test_flatten_layers_public_walk_finds_the_same_layers():
    from zoo import compat

    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    inputs = keras.Input((4,))
    x = keras.layers.MultiHeadAttention(2, 2)(inputs[:, None], inputs[:, None])[:, 0]
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(x + inputs)))

    def ids(layers):
        return {id(layer) for layer in layers if not isinstance(layer, keras.layers.InputLayer)}

    for include_self in (True, False):
        private = compat.flatten_layers(model, include_self=include_self)
        assert ids(compat.walk_layers(model, include_self)) == ids(private)
        assert (model in private) is include_self
    assert sum(isinstance(layer, keras.layers.EinsumDense) for layer in compat.flatten_layers(model)) == 4


def test_variable_index_says_which_private_name_is_missing():
    from zoo import compat

    with pytest.raises(compat.UnsupportedVersionError, match="_get_variable_index"):
        compat.variable_index(object(), None)


def test_fresh_layer_names_number_from_zero_and_restore_the_counters():
    from applications.compat import fresh_layer_names

    keras.layers.ReLU()
    with fresh_layer_names():
        assert keras.layers.ReLU().name == "re_lu"
    assert keras.layers.ReLU().name != "re_lu"
