"""Fold the shape arithmetic the ONNX tracer records for sizes that are in fact static.

With dynamic axes the tracer turns every ``x.shape[i]`` read into ``Shape -> Gather``, also for the channel count
and for the spatial size after the detector's fixed-size resize. ONNX shape inference with data propagation knows
those dims; replacing such a ``Gather`` by a constant lets ONNX Runtime fold the ``Div``/``Unsqueeze``/``Concat``
chains behind it (a ShuffleNetV1 channel shuffle records five of them per unit). Dims that stay dynamic (batch,
and H/W of a segmenter) keep their ``Shape`` nodes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_static_dims", "drop_dead_nodes"]


def _static_dims(proto) -> dict[str, list[int | None]]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    graph = inferred.graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*graph.value_info, *graph.input, *graph.output]}


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def fold_static_dims(proto) -> int:
    """Replace ``Gather(Shape(x), i)`` by a constant wherever dim ``i`` of ``x`` is static; returns how many."""
    from onnx import helper, numpy_helper

    dims, constants = _static_dims(proto), _constants(proto.graph)
    producer = {out: node for node in proto.graph.node for out in node.output}
    nodes, folded = [], 0
    for node in proto.graph.node:
        source = producer.get(node.input[0]) if node.op_type == "Gather" else None
        index = constants.get(node.input[1]) if source is not None else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if source is not None and source.op_type == "Shape" and not source.attribute and index is not None \
                and axis == 0 and index.dtype.kind == "i":
            shape = dims.get(source.input[0]) or []
            picked = [shape[i] if -len(shape) <= i < len(shape) else None for i in np.atleast_1d(index).tolist()]
            if picked and all(picked):
                value = np.array(picked, dtype=np.int64).reshape(index.shape)
                nodes.append(helper.make_node("Constant", [], list(node.output), name=node.name,
                                              value=numpy_helper.from_array(value)))
                folded += 1
                continue
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return folded


def drop_dead_nodes(proto) -> int:
    """Remove nodes none of whose outputs is used (repeatedly); returns how many."""
    graph, removed = proto.graph, 0
    while True:
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        alive = [node for node in graph.node if any(out in used for out in node.output)]
        if len(alive) == len(graph.node):
            return removed
        removed += len(graph.node) - len(alive)
        del graph.node[:]
        graph.node.extend(alive)
