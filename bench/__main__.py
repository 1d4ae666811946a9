"""Run the benchmarks, then rewrite docs/benchmarks.md from every result file.

``python -m bench`` runs every ``bench/*.py`` module that defines ``main()``;
``python -m bench NAME ...`` runs only those.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import ROOT, write_markdown

_NOT_BENCHMARKS = frozenset({"__main__", "common"})


def benchmarks() -> dict[str, Callable[[], None]]:
    found: dict[str, Callable[[], None]] = {}
    for module_info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module_info.name in _NOT_BENCHMARKS:
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found[module_info.name] = entry
    return found


def main(argv: list[str]) -> int:
    available = benchmarks()
    unknown = [name for name in argv if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available)}")
        return 2
    for name in argv or list(available):
        started = time.monotonic()
        available[name]()
        print(f"{name}: {time.monotonic() - started:.0f} s")
    print(f"wrote {write_markdown().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
