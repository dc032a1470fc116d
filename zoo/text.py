"""Plain-text tables for the terminal (no colours), through the ``tabulate`` library.

Example:
    >>> print(table([["resnet50.imagenet", 0.7612]], ["model", "top-1"]))
    model              top-1
    -----------------  ------
    resnet50.imagenet  0.7612
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate


def cell(value: Any, floatfmt: str = ".4g") -> str:
    """A value as table text: None as empty, floats with ``floatfmt``, anything else with ``str``."""
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str], floatfmt: str = ".4g") -> str:
    """Rows under a header, left-aligned columns, a dashed line below the header, no trailing spaces.

    Cells are written as they are (``"007"`` stays ``007``); floats use ``floatfmt``; None is empty.
    """
    body = [[cell(v, floatfmt) for v in row] for row in rows]
    text = tabulate(body, headers=[str(h) for h in header], tablefmt="simple", disable_numparse=True,
                    stralign="left")
    return "\n".join(line.rstrip() for line in text.splitlines())
