"""`onnxslice inspect`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

inspect = not_implemented("inspect", "Summarise a slice.json: kept neurons per layer and category.")
