"""One module per op family, each holding the family's channel rule and its restructure edit; importing this
package imports every module in it, which fills the op table :data:`OPS` (ONNX op type -> family).

Adding an op family is one module here: subclass :class:`OpFamily`, set ``ops``, write ``rule`` (and ``edit``
when restructure must change a constant or attribute) and decorate it with :func:`register`.
"""

import importlib
import pkgutil

from onnxslice.surgery.ops.base import OPS, OpFamily, family_of, register
from onnxslice.surgery.ops.layer import LAYER

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LAYER", "OPS", "OpFamily", "family_of", "register"]
