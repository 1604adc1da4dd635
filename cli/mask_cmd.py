"""`onnxslice mask`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

mask = not_implemented("mask", "Zero the non-critical neurons of a slice, shapes unchanged -> masked.onnx.")
