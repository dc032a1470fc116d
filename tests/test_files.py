"""Atomic writes (zoo.files), plots through matplotlib's Figure API (zoo.runs), text tables (zoo.text)."""
import ast
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.files import atomic_copy, atomic_save, atomic_write
from zoo.text import table

ROOT = Path(__file__).resolve().parents[1]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- atomic writes ---------------------------------------------------------------------------------

def test_atomic_write_writes_text_and_bytes_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    assert atomic_write(target, '{"accuracy": 0.9, "name": "café"}') == target
    assert json.loads(target.read_text(encoding="utf-8")) == {"accuracy": 0.9, "name": "café"}
    atomic_write(target, b"\x00\x01binary")
    assert target.read_bytes() == b"\x00\x01binary"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    if os.name == "posix":  # the usual permissions, not mkstemp's 0600
        assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_write_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real(fd)))
    atomic_write(tmp_path / "x.txt", "x")
    import stat
    assert any(stat.S_ISREG(m) for m in synced)
    if os.name == "posix":
        assert any(stat.S_ISDIR(m) for m in synced)


def test_a_full_disk_at_fsync_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(OSError) as e:
        atomic_write(target, "new" * 1000)
    assert e.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_full_disk_in_the_middle_of_the_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    target.write_text("old")
    real_fdopen = os.fdopen

    class Full:
        """A file object whose write gets half way, then finds the disk full."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            _no_space()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(OSError) as e:
        atomic_write(target, "epoch,loss\n" * 100)
    assert e.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_atomic_save_removes_the_partial_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "curves.png"
    target.write_bytes(b"old picture")

    def write(tmp: Path):
        assert tmp.name == "curves.png" and tmp.parent != tmp_path  # same name, so the same suffix
        tmp.write_bytes(b"half a pic")
        _no_space()

    with pytest.raises(OSError):
        atomic_save(target, write)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_atomic_save_refuses_a_writer_that_wrote_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_save(tmp_path / "x.png", lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def test_atomic_copy_copies_and_cleans_up_on_failure(tmp_path, monkeypatch):
    source = tmp_path / "src.h5"
    source.write_bytes(os.urandom(1 << 16))
    target = tmp_path / "cache" / "models" / "weights.h5"
    assert atomic_copy(source, target) == target
    assert target.read_bytes() == source.read_bytes()
    monkeypatch.setattr(os, "fsync", _no_space)
    other = tmp_path / "cache" / "models" / "other.h5"
    with pytest.raises(OSError):
        atomic_copy(source, other)
    assert sorted(p.name for p in other.parent.iterdir()) == ["weights.h5"]


def test_atomic_save_saves_a_figure_and_a_keras_model(tmp_path):
    import keras
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    png = atomic_save(tmp_path / "plot.png", fig.savefig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = atomic_save(tmp_path / "model.keras", model.save)
    loaded = keras.saving.load_model(path)
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "plot.png"]


WRITERS = {"write_text", "write_bytes"}


def _direct_writes(path: Path) -> list[str]:
    """Calls that write a file without zoo.files: ``.write_text``/``.write_bytes`` and ``open`` (builtin,
    ``io.open``, ``Path.open``, ``os.fdopen``) with a mode that writes."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in WRITERS:
            found.append(f"{path.name}:{node.lineno} {name}")
        elif name in {"open", "fdopen"}:
            receiver_is_path = isinstance(func, ast.Attribute) and not (
                isinstance(func.value, ast.Name) and func.value.id in {"io", "os", "builtins", "codecs", "gzip"})
            modes = [k.value for k in node.keywords if k.arg == "mode"]
            position = 0 if receiver_is_path else 1  # Path.open(mode) / open(file, mode)
            if len(node.args) > position:
                modes.append(node.args[position])
            for mode in modes:
                text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "?"
                if set(text) & set("wax+?"):
                    found.append(f"{path.name}:{node.lineno} {name}({text!r})")
    return found


def test_tuning_runs_and_weights_write_files_only_through_zoo_files():
    modules = [*sorted((ROOT / "tuning").glob("*.py")), ROOT / "zoo" / "runs.py", ROOT / "zoo" / "weights.py"]
    offenders = [hit for module in modules for hit in _direct_writes(module)]
    assert offenders == [], f"write through zoo.files.atomic_write/atomic_save/atomic_copy instead: {offenders}"
    # the checker itself finds what it looks for
    sample = ROOT / "zoo" / "files.py"
    assert any("fdopen('wb')" in hit for hit in _direct_writes(sample))


# --- plots -----------------------------------------------------------------------------------------

HISTORY = [{"epoch": e, "phase": "head" if e < 3 else "full", "loss": 2 / (e + 1), "val_loss": 2.2 / (e + 1),
            "accuracy": 0.5 + e / 20, "val_accuracy": 0.45 + e / 22} for e in range(6)]


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_confusion_report_matches_an_independent_count_and_writes_the_png(tmp_path):
    from zoo.runs import confusion_report

    rng = np.random.default_rng(0)
    n = 6
    labels = rng.integers(0, n, 300)
    predicted = np.where(rng.random(300) < 0.6, labels, rng.integers(0, n - 1, 300))  # class 5 rarely predicted
    expected = np.zeros((n, n), dtype=int)
    for t, p in zip(labels, predicted):
        expected[t, p] += 1
    path = tmp_path / "confusion_matrix.png"
    matrix = confusion_report(labels, predicted, [f"class {i}" for i in range(n)], path, "test split")
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.shape == (n, n)
    assert _png_size(path)[0] > 300
    # classes absent from both labels and predictions still get a row and a column
    matrix = confusion_report([0, 1, 1], [0, 1, 0], ["a", "b", "c", "d"], tmp_path / "small.png", "t")
    np.testing.assert_array_equal(matrix, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_the_confusion_picture_grows_with_many_classes_and_long_names(tmp_path):
    from zoo.runs import plot_confusion

    small, big = tmp_path / "small.png", tmp_path / "big.png"
    plot_confusion(np.eye(4, dtype=int) * 5, ["a", "b", "c", "d"], small, "four")
    names = [f"{i:02d} a class name that goes on and on and o"[:40] for i in range(40)]
    plot_confusion(np.eye(40, dtype=int) * 7, names, big, "forty")
    (w_small, h_small), (w_big, h_big) = _png_size(small), _png_size(big)
    assert w_big > 2 * w_small and h_big > 2 * h_small


PLOT_SCRIPT = """
import sys
from pathlib import Path
import matplotlib
before = matplotlib.get_backend()
out = Path(sys.argv[1])
{calls}
import matplotlib.pyplot as plt  # only now, to see that no figure was left open in pyplot
print(before, matplotlib.get_backend(), len(plt.get_fignums()))
"""


def _plot_in_a_fresh_process(calls: str, out: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "svg"}  # a backend the library must not switch to Agg
    done = subprocess.run([sys.executable, "-c", PLOT_SCRIPT.format(calls=calls), str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    before, after, open_figures = done.stdout.split()[-3:]
    assert before == after == "svg" and open_figures == "0"


def test_run_plots_leave_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    _plot_in_a_fresh_process(f"""
from zoo.runs import confusion_report, plot_curves
plot_curves({HISTORY!r}, out / "curves.png")
confusion_report([0, 1, 2, 2], [0, 2, 2, 1], ["cat", "dog", "bird"], out / "confusion.png", "t")
""", tmp_path)
    for name in ("curves.png", "confusion.png"):
        assert _png_size(tmp_path / name)[0] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png"]


def test_lr_find_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    _plot_in_a_fresh_process("""
from zoo.training.lr_find import LRFinderResult
LRFinderResult([1e-5, 1e-4, 1e-3, 1e-2], [2.0, 1.5, 1.0, 3.0], 1e-3).plot(str(out / "lr.png"))
""", tmp_path)
    assert _png_size(tmp_path / "lr.png")[0] > 200
    assert [p.name for p in tmp_path.iterdir()] == ["lr.png"]


def test_library_code_never_calls_matplotlib_use():
    for module in [*(ROOT / "zoo").rglob("*.py"), *(ROOT / "tuning").glob("*.py")]:
        text = module.read_text()
        assert "matplotlib.use(" not in text and "import matplotlib.pyplot" not in text, module


# --- tables ----------------------------------------------------------------------------------------

def test_table_is_plain_aligned_text():
    text = table([["resnet50.imagenet", 0.761234, None], ["007", 12, "x"]], ["model", "top-1", "note"])
    lines = text.splitlines()
    assert lines[0].split() == ["model", "top-1", "note"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["resnet50.imagenet", "0.7612"]
    assert lines[3].split() == ["007", "12", "x"]  # text stays text: no number parsing
    assert lines[2].index("0.7612") == lines[0].index("top-1")  # columns line up
    assert "\x1b" not in text and all(line == line.rstrip() for line in lines)


def test_tuning_table_uses_the_shared_helper():
    from tuning.results import format_table

    rows = [{"trial": "00", "status": "COMPLETED", "score": 0.912345, "lr": 0.001, "error": ""},
            {"trial": "01", "status": "FAILED", "score": None, "lr": 0.1, "error": "ValueError: bad"}]
    assert format_table(rows) == table([[r[c] for c in rows[0]] for r in rows], list(rows[0]))
    assert format_table(rows).splitlines()[2].split()[:3] == ["00", "COMPLETED", "0.9123"]
    assert format_table([]) == ""
