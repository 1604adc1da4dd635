"""`onnxslice profile`: not implemented yet (its issue has not landed)."""

from onnxslice_cli.common import not_implemented

profile = not_implemented(
    "profile",
    "Measure every neuron per category: contributions and CKA statistics -> profile.npz.",
)
