"""The ``onnxslice`` command line: a thin click layer over the onnxslice library."""
