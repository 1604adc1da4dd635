"""`onnxslice restructure`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

restructure = not_implemented(
    "restructure",
    "Physically remove the non-critical neurons, verified against the mask -> pruned.onnx.",
)
