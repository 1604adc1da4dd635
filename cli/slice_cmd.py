"""`onnxslice slice`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

slice = not_implemented("slice", "Select the critical neurons (semantic, global or category-wise) -> slice.json.")
