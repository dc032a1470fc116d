"""The docstrings of Python's standard library as a text corpus every machine has: real English, PSF licence,
no download. The text main job pretrains on one half and fine-tunes on the other.

Each docstring (of a module, class or function; five words or more) is read from the source files with ``ast``,
without importing anything. A stable hash of its place (``module:name``) splits the corpus at random into a
pretraining half and a labelled half; a labelled docstring's class is its top-level package, among the
``PACKAGES`` largest packages (tests left out), and a text the pretraining half holds too is left out of it.

Example:
    >>> texts, labels, classes = labelled()
    >>> classes[:3]
    ('asyncio', 'distutils', 'email')
"""
from __future__ import annotations

import ast
import functools
import hashlib
import sysconfig
from collections import Counter
from pathlib import Path

PACKAGES = 8  # the labelled half's classes: the largest top-level packages
MIN_WORDS = 5
_LEFT_OUT = {"site-packages", "dist-packages", "__pycache__"}  # not the standard library
SOURCE = "pydoc"  # the name zoo.data.load knows it by


@functools.cache
def docstrings() -> tuple[tuple[str, str, str], ...]:
    """Every docstring of the standard library's source as ``(module, name, text)``, in file order; tests,
    whose docstrings describe tests, are left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if _LEFT_OUT & set(parts) or any(p.startswith(("test", "idle_test")) for p in parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # lib2to3's fixtures hold Python 2
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        nodes = [("", tree), *((n.name, n) for n in ast.walk(tree)
                               if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
        for name, node in nodes:
            text = ast.get_docstring(node)
            if text and len(text.split()) >= MIN_WORDS:
                found.append((module, name, text))
    return tuple(found)


def _half(module: str, name: str) -> int:
    """0 (pretraining) or 1 (labelled): a stable coin flip for one docstring, the same on every machine."""
    return hashlib.sha256(f"{module}:{name}".encode()).digest()[0] & 1


def pretraining() -> list[str]:
    """The pretraining half: docstrings of every module, with no labels."""
    return [text for module, name, text in docstrings() if _half(module, name) == 0]


def labelled() -> tuple[list[str], list[int], tuple[str, ...]]:
    """The labelled half: (texts, class ids, class names), a docstring's class being its top-level package."""
    root = Path(sysconfig.get_paths()["stdlib"])
    package = {m: m.split(".")[0] for m, _, _ in docstrings() if (root / m.split(".")[0]).is_dir()}
    sizes = Counter(package[m] for m, _, _ in docstrings() if m in package)
    classes = tuple(sorted(name for name, _ in sizes.most_common(PACKAGES)))
    seen = set(pretraining())  # a docstring repeated in both halves (an override's) is left out of this one
    chosen = [(text, classes.index(package[m])) for m, name, text in docstrings()
              if _half(m, name) == 1 and package.get(m) in classes and text not in seen]
    return [text for text, _ in chosen], [label for _, label in chosen], classes
