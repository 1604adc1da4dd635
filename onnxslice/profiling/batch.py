"""Where the samples lie in each observed activation: found by running the model, never assumed to be axis 0.

Exporters do not keep the batch first everywhere: a transformer's attention runs sequence-first (PyTorch's
``nn.MultiheadAttention`` gives its in-projection an output (tokens, batch, 3·hidden)), and its out-projection
reads a (tokens·batch, hidden) matrix in which the samples are merged with the tokens. Shape inference cannot
tell: after a Reshape it names the batch axis anew (``unk__0``), or writes ``17*batch``. So the model itself is
asked: two probe batches of different sizes (2 and 3 samples) go through onnxruntime with every layer's
activation as an output, and the axis whose size follows the number of samples is the batch axis.

- exactly one axis has size 2, then 3: the batch axis (moved first wherever activations are read);
- an axis grows by a multiple of the samples (34, then 51): the samples are merged with another axis and
  cannot be told apart: the layer is not profiled and is kept whole, with that reason;
- no axis follows the samples, or several do: kept whole, with the reason.

A model exported with a fixed batch size cannot take two sizes: axis 0 is taken where its size is that batch size,
any other layer is kept whole with the reason. The decision is made once per model, as data
(:class:`BatchAxes`), and both the onnxruntime pass and the PyTorch (gradient) pass read it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from onnxslice.graph import NeuronLayer

#: The two probe batch sizes (different, and neither 1, so that no axis of size 1 is mistaken for the batch).
PROBE_SIZES = (2, 3)


@dataclass(frozen=True)
class BatchAxes:
    """The layers whose samples were found (``batch_axis`` set) and the ones kept whole, with the reason."""

    layers: list[NeuronLayer]
    excluded: dict[str, str]  #: layer name -> why it is not profiled (its channels are kept whole)


def find_batch_axes(layers: Sequence[NeuronLayer], run: Callable[[np.ndarray, list[str]], list[np.ndarray]],
                    sample: np.ndarray, static_batch: int | None = None) -> BatchAxes:
    """The batch axis of every layer's observed activation.

    ``run(x, outputs)``: the layers' activations for samples ``x``; ``sample``: one input sample (1, ...), repeated
    to make the probe batches; ``static_batch``: the fixed batch size of a model exported with one (no probe).
    """
    names = list(dict.fromkeys(layer.output for layer in layers))
    if static_batch is not None:
        shapes = dict(zip(names, (out.shape for out in run(np.repeat(sample, static_batch, axis=0), names)),
                          strict=True))
        return _decide(layers, lambda layer: _static_axis(shapes[layer.output], static_batch),
                       {name: len(shape) for name, shape in shapes.items()})
    small, large = PROBE_SIZES
    shapes_small = dict(zip(names, (out.shape for out in run(np.repeat(sample, small, axis=0), names)), strict=True))
    shapes_large = dict(zip(names, (out.shape for out in run(np.repeat(sample, large, axis=0), names)), strict=True))
    return _decide(layers, lambda layer: batch_axis_of(shapes_small[layer.output], shapes_large[layer.output]),
                   {name: len(shape) for name, shape in shapes_small.items()})


def batch_axis_of(small: Sequence[int], large: Sequence[int]) -> int | str:
    """The axis along which an activation of :data:`PROBE_SIZES` samples has exactly that many entries, from its
    shapes for the two probe batches; else why there is none (a sentence, for the user)."""
    n_small, n_large = PROBE_SIZES
    if len(small) != len(large):
        return f"its rank changes with the number of samples ({list(small)} for {n_small}, {list(large)} for {n_large})"
    varying = [axis for axis, (a, b) in enumerate(zip(small, large, strict=True)) if a != b]
    exact = [axis for axis in varying if (small[axis], large[axis]) == (n_small, n_large)]
    merged = [axis for axis in varying if small[axis] * n_large == large[axis] * n_small and axis not in exact]
    if len(varying) == 1 and exact:
        return exact[0]
    if len(varying) == 1 and merged:
        axis = merged[0]
        return (f"its samples are merged with another axis (axis {axis} has {small[axis]} entries for {n_small} "
                f"samples, {large[axis]} for {n_large})")
    if not varying:
        return f"no axis of its activation {list(small)} follows the number of samples"
    return f"several axes of its activation follow the number of samples ({list(small)} for {n_small}, " \
           f"{list(large)} for {n_large})"


def _static_axis(shape: Sequence[int], batch: int) -> int | str:
    if len(shape) and shape[0] == batch:
        return 0
    return (f"the model has a fixed batch size of {batch} and axis 0 of its activation {list(shape)} is not it "
            "(its samples cannot be found)")


def _decide(layers: Sequence[NeuronLayer], axis_of: Callable[[NeuronLayer], int | str],
            ranks: dict[str, int]) -> BatchAxes:
    found, excluded = [], {}
    for layer in layers:
        axis = axis_of(layer)
        if isinstance(axis, str):
            excluded[layer.name] = axis
        elif axis == layer.channel_axis % max(ranks[layer.output], 1):
            excluded[layer.name] = "its samples lie along its neuron axis"
        else:
            found.append(replace(layer, batch_axis=axis) if axis != layer.batch_axis else layer)
    return BatchAxes(found, excluded)

