"""onnxslice: neuron-level semantic slicing and model maintenance for ONNX classifiers.

The API (see :mod:`onnxslice.api`) is imported on first use, so that ``import onnxslice`` — and the command
line's start-up — stays quick::

    import onnxslice as osl
    model = osl.load("models/mlp_digits.onnx")
    profile = osl.profile(model, "digits:train", metrics=["avg"])
    piece = osl.select(model, profile, "avg", "global", target_macs=0.5)
    smaller = osl.restructure(model, piece).model
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(["Model", "Restructured", "Swept", "load", "load_profile", "load_slice", "profile", "select",
                     "inspect", "mask", "kept_fraction", "restructure", "evaluate", "finetune", "prune", "readapt",
                     "incremental", "compress", "sweep"], "onnxslice.api"),
    "Profile": "onnxslice.profiling.artifact", "Slice": "onnxslice.slicing.artifact",
    "DataSource": "onnxslice.data", "load_data": "onnxslice.data", "InputError": "onnxslice.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'onnxslice' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
