"""A benchmark script imported as a module (its pure parts tested without running it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent.parent


def load_benchmark(filename: str) -> ModuleType:
    """``benchmarks/<filename>`` as a module; the path changes its import makes (a benchmark puts the repository or
    benchmarks/ first on ``sys.path``) are undone, so the tests after it import as before."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(filename).stem}", ROOT / "benchmarks" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module
