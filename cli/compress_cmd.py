"""`onnxslice compress`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

compress = not_implemented(
    "compress",
    "Restructure, then unstructured pruning inside the critical neurons -> out.onnx.",
)
