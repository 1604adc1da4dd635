"""`onnxslice readapt`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

readapt = not_implemented(
    "readapt",
    "Re-train only the critical neurons, e.g. against adversarial samples -> out.onnx.",
)
