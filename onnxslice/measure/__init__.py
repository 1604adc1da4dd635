"""Measuring a model: accuracy on data, parameters, MACs and onnxruntime latency."""
