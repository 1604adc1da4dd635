"""`python -m onnxslice_cli`: the same as the `onnxslice` console script."""

from onnxslice_cli.entry import main

main()
