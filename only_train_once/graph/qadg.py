"""QADG pass: fold every quantizer into the layer it feeds.

A quantized layer traces as ``fake_quantize(weight, d, q_m[, t])`` and, with activation quantization,
``fake_quantize(x, d_act, q_m_act[, t_act])`` followed by the layer's operator. This pass removes each
quantizer node, reconnects its input (the weight parameter or the activation) straight into the
consumer, and records the quantizer parameters on the consumer, so a quantized model has the same
topology and the same groups as its float twin.
"""

from __future__ import annotations


def fold_quantizers(graph) -> int:
    """Fold quantizer nodes into their consumers; returns the number folded."""
    folded = 0
    # The last call of each quantized layer's forward is its operator (conv2d, linear...). A padding mode other
    # than zeros puts an F.pad between the activation quantizer and that operator; the quantizer's parameters
    # still belong to the layer, i.e. to the group of its weight.
    layer_operator = {id(n.call.module): n for n in graph.nodes.values()
                      if n.op_name != "quantize" and n.call.module is not None}
    for node in list(graph.nodes.values()):
        if node.op_name != "quantize":
            continue
        out = node.outputs[0]
        consumers = [c for c in graph.successors(node) if out in c.call.inputs]
        if not consumers or out in graph.output_values:
            continue
        source = node.call.inputs[0]
        quant_names = [graph.values[v].name for v in node.call.inputs[1:] if graph.values[v].name]
        for consumer in consumers:
            graph.replace_input(consumer, out, source)
            owner = consumer
            if consumer.call.module is node.call.module and node.call.module is not None:
                owner = layer_operator.get(id(node.call.module), consumer)
            owner.quant_param_names.extend(n for n in quant_names if n not in owner.quant_param_names)
            consumer.folded_quantizers.append(node.call)
        graph.remove_node(node)
        folded += 1
    return folded
