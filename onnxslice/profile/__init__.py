"""Measuring neurons on data: activations through onnxruntime, contribution metrics, CKA statistics."""
