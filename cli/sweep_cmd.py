"""`onnxslice sweep`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

sweep = not_implemented("sweep", "Accuracy vs parameters removed for many thresholds, strategies and metrics (+ plot).")
