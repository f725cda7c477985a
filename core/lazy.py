"""Package attributes imported on first use, so that light parts of core never load Keras.

``core.models``, ``core.training``, ``core.evaluation`` and ``core.data`` export names from
modules that import Keras or TensorFlow; the API process imports those packages for their plain
parts (specs, configs, metrics) and must not pay for the rest. Each package declares which of
its names live where, and takes its module ``__getattr__`` (PEP 562) from here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, Iterable[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name from its home module on first use.

    Args:
        package: the package's ``__name__`` (for the error message).
        homes: module name → the names it provides, e.g.
            ``{"core.training.trainer": ("train", "TrainResult")}``.
    """
    home_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = home_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
