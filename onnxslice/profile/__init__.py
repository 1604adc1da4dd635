"""Measuring neurons on data: activations through onnxruntime, contribution metrics, CKA statistics."""

from onnxslice.profile.artifact import Profile
from onnxslice.profile.metrics import METRICS, Metric
from onnxslice.profile.profiler import profile_model

__all__ = ["METRICS", "Metric", "Profile", "profile_model"]
