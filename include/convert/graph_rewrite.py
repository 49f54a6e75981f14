"""Graph rewrites before conversion: hard-swish in a form the CPU delegate runs in int8.

MobileDet-CPU's activation is hard-swish, x * relu6(x + 3) / 6 (`include.mobiledet.blocks.
HardSwish`). TensorFlow's converter fuses that pattern into one HARD_SWISH op. XNNPACK (LiteRT's
default CPU delegate) runs HARD_SWISH in float but not in int8, so in an int8 model each of the
57 hard-swish ops stays on the interpreter's reference kernels and cuts the graph: the full-size
int8 model runs as ~59 delegate partitions and is several times slower than its float32 model.

`split_hard_swish` rewrites each pattern in the frozen GraphDef as

    (x * (1/6)) * relu6(x + 3)

the same function, whose ops the converter leaves alone (its fusion patterns need the product
x * relu6(x + 3) first) and XNNPACK takes in int8: MUL by a constant, ADD with a fused RELU6,
MUL. The value of every tensor outside the pattern is unchanged; inside it, x/6 replaces
x * relu6(x + 3), so int8 calibration gives that tensor its own range.

Applied to the integer conversion of graphs with hard-swish (the CPU variant), see
`include.convert.converter.convert` and `rewrite_for` below; float recipes keep the fused op
(XNNPACK runs float HARD_SWISH). What was tried and measured: README "Integer models on the CPU".
"""
from __future__ import annotations

#: conversions the rewrite applies to: integer precisions calibrated from a float graph
REWRITE_PRECISIONS = ("int8",)
#: the variants whose integer models run on the CPU through XNNPACK and have hard-swish
VARIANTS = ("cpu",)
_SIXTH = 1.0 / 6.0


def _scalar(node, value: float, tol: float = 1e-6) -> bool:
    """A Const node holding one float close to `value` (any rank with one element)."""
    if node is None or node.op != "Const":
        return False
    from tensorflow.python.framework import tensor_util

    try:
        arr = tensor_util.MakeNdarray(node.attr["value"].tensor)
    except Exception:  # noqa: BLE001 - not a readable tensor: not our constant
        return False
    return arr.size == 1 and arr.dtype.kind == "f" and abs(float(arr.reshape(-1)[0]) - value) <= tol


def _name(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def find_hard_swish(graph_def) -> list[dict]:
    """Every x * relu6(x + 3) * (1/6) of the graph: [{x, add, relu6, mul, mul_1, sixth}] (node
    names; `mul` = x * relu6, `mul_1` = mul * sixth), in graph order."""
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, int] = {}
    for n in graph_def.node:
        for i in n.input:
            consumers[_name(i)] = consumers.get(_name(i), 0) + 1
    found = []
    for outer in graph_def.node:
        if outer.op != "Mul" or len(outer.input) != 2:
            continue
        a, b = (nodes.get(_name(i)) for i in outer.input)
        inner, sixth = (a, b) if _scalar(b, _SIXTH) else (b, a)
        if inner is None or inner.op != "Mul" or not _scalar(sixth, _SIXTH) \
                or consumers.get(inner.name) != 1 or len(inner.input) != 2:
            continue
        for x_in, r_in in (inner.input, reversed(inner.input)):
            relu = nodes.get(_name(r_in))
            if relu is None or relu.op != "Relu6" or consumers.get(relu.name) != 1:
                continue
            add = nodes.get(_name(relu.input[0]))
            if add is None or add.op not in ("AddV2", "Add") or consumers.get(add.name) != 1:
                continue
            add_x = [i for i in add.input if not _scalar(nodes.get(_name(i)), 3.0)]
            if len(add_x) == 1 and len(add.input) == 2 and add_x[0] == x_in:
                found.append({"x": x_in, "add": add.name, "relu6": relu.name,
                              "mul": inner.name, "mul_1": outer.name, "sixth": sixth.name})
                break
    return found


_LINEAR = ("Conv2D", "DepthwiseConv2dNative")
_PASS_SCALE = ("Identity", "AvgPool", "Mean")


def _consumers(graph_def) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph_def.node:
        for i in n.input:
            out.setdefault(_name(i), []).append(n)
    return out


def _filter_const(conv, nodes, consumers):
    """The Const holding `conv`'s filter (through Identity reads), when only this conv uses it;
    else None."""
    node = nodes.get(_name(conv.input[1]))
    chain = [conv]
    while node is not None and node.op == "Identity":
        chain.append(node)
        node = nodes.get(_name(node.input[0]))
    if node is None or node.op != "Const":
        return None
    for user, used_by in zip(chain[1:] + [node], chain):
        if [c.name for c in consumers.get(user.name, [])] != [used_by.name]:
            return None
    return node


def _fold_targets(start: str, nodes, consumers, depth: int = 0) -> list | None:
    """The filters to divide by 6 when tensor `start` carries 6x its value: every path from it
    must reach the data input of a convolution through ops that are linear in it (Identity,
    a global pool, a Mul by another tensor). None when some path cannot absorb the factor."""
    users = consumers.get(start, [])
    if not users or depth > 8:
        return None
    out = []
    for c in users:
        ins = [_name(i) for i in c.input if not i.startswith("^")]
        if c.op in _LINEAR and ins[0] == start and ins[1] != start:
            const = _filter_const(c, nodes, consumers)
            if const is None:
                return None
            out.append(const.name)
        elif (c.op in _PASS_SCALE and ins[0] == start) or (c.op == "Mul" and ins.count(start) == 1):
            more = _fold_targets(c.name, nodes, consumers, depth + 1)
            if more is None:
                return None
            out.extend(more)
        else:
            return None
    return out


def _scale_const(node, factor: float) -> None:
    import numpy as np
    from tensorflow.python.framework import tensor_util

    arr = tensor_util.MakeNdarray(node.attr["value"].tensor)
    node.attr["value"].tensor.CopyFrom(
        tensor_util.make_tensor_proto((arr * np.float32(factor)).astype(arr.dtype)))


def split_hard_swish(graph_def):
    """-> (a rewritten copy of `graph_def`, {"folded": n, "split": m}); see the module
    docstring. The pattern's output node keeps its name, so nothing downstream changes.

    folded: x * relu6(x + 3), the 1/6 folded into the filters of the convolutions the output
    reaches (through squeeze-and-excite's pool and scale); split: (x * (1/6)) * relu6(x + 3),
    where some path from the output does not end in a convolution."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    found = find_hard_swish(out)
    nodes = {n.name: n for n in out.node}
    consumers = _consumers(out)
    folded = split = 0
    scaled: set[str] = set()
    for p in found:
        inner, outer = nodes[p["mul"]], nodes[p["mul_1"]]
        targets = _fold_targets(outer.name, nodes, consumers)
        if targets is not None and len(set(targets)) == len(targets) \
                and not scaled & set(targets):
            for name in targets:
                _scale_const(nodes[name], _SIXTH)
            scaled.update(targets)
            dtype = outer.attr["T"].type
            for key in list(outer.attr):
                del outer.attr[key]
            outer.op = "Identity"                       # x * relu6(x + 3), i.e. 6 hswish(x)
            del outer.input[:]
            outer.input.append(p["mul"])
            outer.attr["T"].type = dtype
            folded += 1
        else:
            del inner.input[:]
            inner.input.extend([p["x"], p["sixth"]])    # x * (1/6)
            del outer.input[:]
            outer.input.extend([p["mul"], p["relu6"]])  # (x / 6) * relu6(x + 3)
            split += 1
    return out, {"folded": folded, "split": split}


def global_pools(graph_def) -> list[str]:
    """Names of the AvgPool nodes that pool the whole feature map (VALID padding, window =
    the input's spatial size): squeeze-and-excite's pool."""
    import tensorflow as tf

    pools = [n for n in graph_def.node if n.op == "AvgPool"
             and n.attr["padding"].s == b"VALID" and n.attr["data_format"].s in (b"", b"NHWC")]
    if not pools:
        return []
    body = tf.compat.v1.GraphDef()  # the post-process op is not a TensorFlow op: leave it out
    body.node.extend(n for n in graph_def.node if n.op != "TFLite_Detection_PostProcess")
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(body, name="")
    out = []
    for n in pools:
        shape = graph.get_operation_by_name(n.name).inputs[0].shape
        ksize = list(n.attr["ksize"].list.i)
        if shape.rank == 4 and shape[1] is not None and shape[2] is not None \
                and ksize == [1, shape[1], shape[2], 1]:
            out.append(n.name)
    return out


def pools_to_mean(graph_def):
    """-> (a copy with every global AvgPool replaced by Mean over height and width, keeping
    dims - the same values, and an op XNNPACK runs in int8 where it does not run int8
    AVERAGE_POOL_2D -, the number replaced). The node keeps its name."""
    import numpy as np
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    names = set(global_pools(out))
    added = []
    for n in out.node:
        if n.name not in names:
            continue
        dtype = n.attr["T"].type
        axes = tf.compat.v1.NodeDef()
        axes.name, axes.op = f"{n.name}/mean_axes", "Const"
        axes.attr["dtype"].type = tf.int32.as_datatype_enum
        axes.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int32)))
        added.append(axes)
        for key in list(n.attr):
            del n.attr[key]
        n.op = "Mean"
        n.input.append(axes.name)
        n.attr["T"].type = dtype
        n.attr["Tidx"].type = tf.int32.as_datatype_enum
        n.attr["keep_dims"].b = True
    out.node.extend(added)
    return out, len(names)


def rewrite_for(precision: str, recipe_source: str, variant: str | None) -> bool:
    """Whether the conversion of `precision` (from a `recipe_source` graph) of `variant` gets
    the rewrites: integer recipes from a float graph of the CPU variant (the accelerators'
    compilers take the original ops; float recipes keep XNNPACK's float HARD_SWISH)."""
    return precision in REWRITE_PRECISIONS and recipe_source == "float" and variant in VARIANTS


def rewrite_graph(graph_def) -> tuple:
    """Both rewrites -> (graph_def, counts of what was rewritten)."""
    graph_def, hswish = split_hard_swish(graph_def)
    graph_def, pools = pools_to_mean(graph_def)
    return graph_def, {"hard_swish_folded": hswish["folded"],
                       "hard_swish_split": hswish["split"], "global_pool_to_mean": pools}
