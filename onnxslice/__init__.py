"""onnxslice: neuron-level semantic slicing and model maintenance for ONNX classifiers."""

__version__ = "0.1.0"
