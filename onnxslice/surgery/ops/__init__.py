"""One module per op family, each holding the family's channel rule and its restructure edit; importing this
package fills the op table :data:`OPS` (ONNX op type -> family).

Adding an op family is one module: subclass :class:`OpFamily`, set ``ops``, write ``rule`` (and ``edit`` when
restructure must change a constant or attribute), decorate it with :func:`register`, and import it here.
"""

from onnxslice.surgery.ops import (  # noqa: F401  (each module registers its families)
    across_channels,
    concat,
    elementwise,
    gather,
    passthrough,
    reshape,
    shape,
    slice,
    spatial,
    split,
    squeeze,
    transpose,
)
from onnxslice.surgery.ops.base import OPS, OpFamily, family_of, register
from onnxslice.surgery.ops.layer import LAYER

__all__ = ["LAYER", "OPS", "OpFamily", "family_of", "register"]
