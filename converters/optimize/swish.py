"""Swish (SiLU) fusion: x * Sigmoid(x) after a Conv, ConvTranspose, Gemm or MatMul becomes that
node's fused activation "Swish" (runtime.kernels.fused), so the two element-wise passes and
their buffers go: EfficientNet runs 49 of them (exported as Sigmoid then Mul, as PyTorch's SiLU
and TensorFlow's swish export). Fused only when the producer's float output is read by the
Sigmoid and the Mul alone, the Sigmoid's by the Mul alone, and neither is pinned (a graph or
signature output, a value a body reads).
"""

from __future__ import annotations

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.activation import honours_activation
from edgerun.converters.optimize.infer import infer
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph


class FuseSwish(Pass):
    name = "fuse_swish"

    def run(self, graph: Graph) -> dict[str, int]:
        keep = rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        facts = None
        fused = 0
        for mul in list(graph.nodes):
            if mul.op_type != "Mul" or mul.domain != "" or len(mul.inputs) != 2 or None in mul.inputs:
                continue
            for x, gate in (mul.inputs, mul.inputs[::-1]):
                sigmoid = made.get(gate)
                producer = made.get(x)
                if (sigmoid is None or sigmoid.op_type != "Sigmoid" or sigmoid.domain != ""
                        or sigmoid.inputs[0] is not x or producer is None or not honours_activation(producer)
                        or "activation" in producer.attrs or len(producer.outputs) != 1
                        or x in keep or gate in keep
                        or {id(n) for n in users.get(x, [])} != {id(sigmoid), id(mul)}
                        or [id(n) for n in users.get(gate, [])] != [id(mul)]):
                    continue
                is_float = rewrite.float_dtype(producer)
                if is_float is None:
                    facts = infer(graph) if facts is None else facts
                    fact = facts.get(x)
                    is_float = fact is not None and fact.dtype.kind == "f"
                if not is_float:
                    continue
                producer.attrs["activation"] = "Swish"
                producer.outputs = [mul.outputs[0]]
                graph.nodes.remove(sigmoid)
                graph.nodes.remove(mul)
                fused += 1
                break
        return {"Sigmoid*Mul into Swish": fused} if fused else {}
