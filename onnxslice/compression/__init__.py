"""Compression and the paper's experiments: unstructured pruning inside a slice, DeepArc, slicing sweeps."""

from onnxslice.compression.loop import CompressResult, compress
from onnxslice.compression.methods import METHODS, PruningMethod, make_method

__all__ = ["METHODS", "CompressResult", "PruningMethod", "compress", "make_method"]
