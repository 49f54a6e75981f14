"""Integer models the CPU delegate runs whole: the graph rewrite for hard-swish, delegate
coverage, the latency ratio to float32 and its gate. Small models; no timing assertions (the
measured figures come from bench/latency.py)."""
from __future__ import annotations

import numpy as np
import pytest

from models import make_image_folder, shared_export


@pytest.fixture(scope="module")
def cpu_export():
    return shared_export(variant="cpu")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("calib"), count=6)


def _raw_outputs(graph_def, source, x):
    """The post-process op's inputs (box encodings, class scores) computed by TensorFlow."""
    import tensorflow as tf

    pp = next(n for n in graph_def.node if n.op == "TFLite_Detection_PostProcess")
    body = tf.compat.v1.GraphDef()
    body.node.extend(n for n in graph_def.node if n.op != "TFLite_Detection_PostProcess")
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(body, name="")
    fetch = [graph.get_tensor_by_name(i if ":" in i else i + ":0") for i in pp.input[:2]]
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(fetch, {source.input_name + ":0": x})


def test_rewrite_keeps_the_float_outputs(cpu_export):
    from include.convert.graph_rewrite import find_hard_swish, rewrite_graph
    from include.convert.source import open_graph, read_graph_def

    source = open_graph(cpu_export)
    original = read_graph_def(source.graph_path)
    assert len(find_hard_swish(original)) > 0
    rewritten, counts = rewrite_graph(original)
    assert counts["hard_swish_folded"] + counts["hard_swish_split"] == len(find_hard_swish(original))
    assert counts["hard_swish_folded"] > 0 and counts["global_pool_to_mean"] > 0
    assert find_hard_swish(rewritten) == []
    assert not any(n.op == "AvgPool" for n in rewritten.node)
    x = np.random.default_rng(0).uniform(-1, 1, source.input_shape).astype(np.float32)
    for a, b in zip(_raw_outputs(original, source, x), _raw_outputs(rewritten, source, x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_split_form_where_the_output_reaches_no_convolution():
    """A hard-swish whose output is a graph output cannot absorb the 1/6: it is split."""
    import tensorflow as tf

    from include.convert.graph_rewrite import find_hard_swish, split_hard_swish

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 4, 4, 2], name="x")
        y = tf.identity(x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0), name="y")
    gd = graph.as_graph_def()
    out, counts = split_hard_swish(gd)
    assert counts == {"folded": 0, "split": 1} and find_hard_swish(out) == []
    v = np.linspace(-5, 5, 32, dtype=np.float32).reshape(1, 4, 4, 2)
    results = []
    for g in (gd, out):
        with tf.Graph().as_default() as g2:
            tf.graph_util.import_graph_def(g, name="")
            with tf.compat.v1.Session(graph=g2) as sess:
                results.append(sess.run("y:0", {"x:0": v}))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)
    assert y is not None


def test_cpu_int8_has_no_hard_swish_and_runs_whole_on_xnnpack(cpu_export, calibration, tmp_path):
    from include.convert.converter import convert
    from include.quality.delegate import delegate_coverage

    report = convert(cpu_export, "int8", tmp_path / "int8.tflite", calibration=calibration,
                     calibration_count=6)
    assert "HARD_SWISH" not in report["ops"] and "AVERAGE_POOL_2D" not in report["ops"]
    assert report["recipe"]["graph_rewrite"]["hard_swish_folded"] > 0
    cov = delegate_coverage(tmp_path / "int8.tflite", threads=1)
    assert cov["ops_total"] == report["op_count"]
    assert cov["ops_delegated"] + sum(cov["fallback_ops"].values()) == cov["ops_total"]
    # what stays off XNNPACK: the input quantise, the ends around the post-process op
    assert set(cov["fallback_ops"]) <= {"QUANTIZE", "CONCATENATION",
                                        "TFLite_Detection_PostProcess"}, cov
    assert cov["partitions"] <= 3
    float_report = convert(cpu_export, "float32", tmp_path / "float32.tflite")
    assert "HARD_SWISH" in float_report["ops"]                # float keeps the fused op
    assert float_report["recipe"]["graph_rewrite"] is None


def _quant_params(model_path) -> dict:
    from include.edgetpu.tflite_model import read_model  # noqa: F401  (the project's reader)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path))
    out = {}
    for t in interp.get_tensor_details():
        q = t["quantization_parameters"]
        if len(q["scales"]) == 1 and t["name"] and t["dtype"] in (np.int8, np.uint8):
            out[t["name"]] = (float(q["scales"][0]), int(q["zero_points"][0]))
    return out


def test_fast_calibration_gives_the_ranges_of_tensorflows_calibrator(cpu_export, calibration,
                                                                     tmp_path):
    from include.convert.converter import convert

    fast = convert(cpu_export, "int8", tmp_path / "fast.tflite", calibration=calibration,
                   calibration_count=6)
    slow = convert(cpu_export, "int8", tmp_path / "slow.tflite", calibration=calibration,
                   calibration_count=6, fast_calibration=False)
    assert "XNNPACK" in fast["calibration"]["calibrator"]
    assert "TensorFlow" in slow["calibration"]["calibrator"]
    a, b = _quant_params(tmp_path / "fast.tflite"), _quant_params(tmp_path / "slow.tflite")
    assert a.keys() == b.keys() and len(a) > 100
    same = 0
    for name in a:
        (sa, za), (sb, zb) = a[name], b[name]
        if abs(sa - sb) <= 1e-3 * sb and abs(za - zb) <= 1:
            same += 1
            continue
        # where they differ, TensorFlow's calibrator read a buffer an in-place op had already
        # overwritten (a residual ADD's input, the ADD feeding x * relu6(x + 3)): its range
        # is wider and holds the true one, never narrower
        lo_a, hi_a = (-128 - za) * sa, (127 - za) * sa
        lo_b, hi_b = (-128 - zb) * sb, (127 - zb) * sb
        assert lo_b <= lo_a + 2 * sb and hi_a <= hi_b + 2 * sb, (name, a[name], b[name])
    assert same >= 0.75 * len(a), (same, len(a))


def test_benchmark_with_a_reference_records_the_ratio_and_the_coverage(cpu_export, calibration,
                                                                       tmp_path):
    from include.convert.converter import convert
    from include.quality.benchmark import benchmark

    convert(cpu_export, "int8", tmp_path / "int8.tflite", calibration=calibration,
            calibration_count=6)
    convert(cpu_export, "float32", tmp_path / "float32.tflite")
    r = benchmark(tmp_path / "int8.tflite", threads=1, warmup=1, runs=3,
                  reference=tmp_path / "float32.tflite")
    assert r["latency_ratio_to_float32"] > 0 and r["latency_ms"]["p50"] > 0
    assert r["reference"]["latency_ms"]["p50"] > 0 and r["reference"]["model_size_bytes"] > 0
    assert r["delegate"]["partitions"] <= 3 and r["reference"]["delegate"]["ops_total"] > 0
    plain = benchmark(tmp_path / "int8.tflite", threads=1, warmup=1, runs=2)
    assert "latency_ratio_to_float32" not in plain and plain["delegate"]["ops_total"] > 0
