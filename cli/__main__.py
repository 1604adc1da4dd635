"""`python -m onnxslice_cli`: the same as the `onnxslice` console script."""

from onnxslice_cli.main import cli

cli()
