"""`onnxslice incremental`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

incremental = not_implemented("incremental", "Learn new classes by training only the non-critical neurons -> new.onnx.")
