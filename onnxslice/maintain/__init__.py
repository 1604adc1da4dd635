"""Maintenance tasks through a PyTorch round trip (paper §4.2 re-adaptation, §4.3 incremental development).

ONNX → PyTorch (onnx2torch) → masked training of chosen neurons → ONNX (torch.onnx.export). See
:mod:`onnxslice.maintain.roundtrip` for how neurons map onto the converted module's parameters.
"""
