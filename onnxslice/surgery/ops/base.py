"""The op family interface and the one op table (ONNX op type -> family) that the analysis and the editor read."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import onnx
import onnx_graphsurgeon as gs

from onnxslice.graph import NeuronLayer

if TYPE_CHECKING:
    from onnxslice.surgery.analysis import Analysis
    from onnxslice.surgery.editor import Editor


class OpFamily:
    """What a family of ONNX ops does to the channels it reads (``rule``) and how restructure edits it (``edit``).

    The defaults are those of an op nothing is known about: it keeps every channel it reads, and needs no edit.
    """

    ops: ClassVar[frozenset[str]] = frozenset()  #: the ONNX op types of the family
    #: Whether ``edit`` slices the constant operands along the channel axis (so restructure_cost counts them).
    slices_constants: ClassVar[bool] = False

    def rule(self, analysis: Analysis, node: onnx.NodeProto) -> None:
        """Give the node's outputs their tracks from its inputs' (unite, keep or drop elements as needed)."""
        analysis.not_understood(node)

    def edit(self, editor: Editor, node: gs.Node) -> None:
        """Change the node's constants and attributes to the channels that stay (inputs are already edited)."""

    def keeps_zero(self, editor: Editor, node: gs.Node, layer: NeuronLayer) -> bool:
        """As a node of ``layer``'s tail: whether a channel zeroed before it (edited by ``edit``) stays zero."""
        return False


#: ONNX op type -> its family; every family module registers its ops here.
OPS: dict[str, OpFamily] = {}
NOT_UNDERSTOOD = OpFamily()


def register(family: type[OpFamily]) -> type[OpFamily]:
    """Class decorator: put one instance of ``family`` in :data:`OPS` under each of its op types."""
    taken = family.ops & OPS.keys()
    if taken:
        raise ValueError(f"{family.__name__}: ops already in the table: {', '.join(sorted(taken))}")
    instance = family()
    OPS.update(dict.fromkeys(family.ops, instance))
    return family


def family_of(op_type: str) -> OpFamily:
    return OPS.get(op_type, NOT_UNDERSTOOD)
