"""Measuring neurons on data: activations through onnxruntime, contribution metrics, CKA statistics."""

from onnxslice.profiling.artifact import Profile
from onnxslice.profiling.metrics import METRICS, Metric
from onnxslice.profiling.profiler import profile_model

__all__ = ["METRICS", "Metric", "Profile", "profile_model"]
