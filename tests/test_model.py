"""MobileDet + SSDLite: blocks, backbones against the published figures, anchors, box coder."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from include.errors import ConfigError
from include.mobiledet import anchors as anchor_gen
from include.mobiledet import blocks, box_coder
from include.mobiledet.describe import describe
from include.mobiledet.spec import ModelSpec

keras = tf.keras

# (params M, multiply-adds B) at 90 classes, 320x320, multiplier 1.0: shared/reference/mobiledet.md
PUBLISHED = {"cpu": (4.21, 0.45), "edgetpu": (4.20, 1.53), "dsp": (7.16, 2.82), "gpu": (13.11, 5.07)}


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_published_figures(variant):
    d = describe(ModelSpec(variant))
    params, macs = PUBLISHED[variant]
    assert abs(d["params"] / 1e6 / params - 1) < 0.01, d["params"]
    assert abs(d["macs"] / 1e9 / macs - 1) < 0.10, d["macs"]
    assert d["anchors"] == 2034
    assert [m[:2] for m in d["feature_maps"]] == [[s, s] for s in (20, 10, 5, 3, 2, 1)]
    assert [m[2] for m in d["feature_maps"]][2:] == [512, 256, 256, 128]
    assert d["trainable_params"] < d["params"]  # BN moving statistics are counted in params


def test_scale_filters_rounds_half_up_to_eight():
    assert blocks.scale_filters(16) == 16
    assert blocks.scale_filters(72, 0.25) == 16      # 18 / 8 = 2.25 -> 2 -> 16
    assert blocks.scale_filters(20, 1.0) == 24       # 2.5 rounds half up
    assert blocks.scale_filters(3, 1.0) == 8         # never below 8


def _inp(h=8, c=16):
    return keras.Input((h, h, c), batch_size=1)


def _layer_types(model):
    return [type(l).__name__ for l in model.layers]


def test_ibn_shapes_and_residual():
    x = _inp(8, 16)
    y = blocks.ibn(x, 16, "relu6", "b", expansion=4)
    m = keras.Model(x, y)
    assert y.shape == (1, 8, 8, 16)
    assert "Add" in _layer_types(m)
    assert m.get_layer("b/expand/conv").kernel.shape == (1, 1, 16, 64)  # Cin * e
    y2 = blocks.ibn(x, 24, "relu6", "s", expansion=8, kernel=5, strides=2, residual=False)
    m2 = keras.Model(x, y2)
    assert y2.shape == (1, 4, 4, 24) and "Add" not in _layer_types(m2)
    assert m2.get_layer("s/depthwise").depthwise_kernel.shape == (5, 5, 128, 1)


def test_residual_refused_when_shapes_differ():
    with pytest.raises(ValueError, match="residual"):
        blocks.ibn(_inp(8, 16), 24, "relu6", "bad", expansion=4)
    with pytest.raises(ValueError, match="residual"):
        blocks.fused_ibn(_inp(8, 16), 16, "relu6", "bad2", expansion=4, strides=2)


def test_ibn_noexp_is_never_residual_and_has_se():
    x = _inp(8, 16)
    y = blocks.ibn_noexp(x, 16, "hswish", "n", se=True)
    m = keras.Model(x, y)
    names = _layer_types(m)
    assert "Add" not in names and "Multiply" in names and "HardSwish" in names
    # SE hidden = scale(16 * 0.25) = 8, with biases and no BN
    assert m.get_layer("n/se_reduce").kernel.shape == (1, 1, 16, 8)
    assert m.get_layer("n/se_expand").use_bias


def test_fused_and_tucker_channels():
    x = _inp(8, 32)
    m = keras.Model(x, blocks.fused_ibn(x, 32, "relu6", "f", expansion=4, kernel=5))
    assert m.get_layer("f/fused/conv").kernel.shape == (5, 5, 32, 128)
    assert "Add" in _layer_types(m)
    t = keras.Model(x, blocks.tucker(x, 32, "relu6", "t", 0.25, 0.75))
    assert t.get_layer("t/reduce/conv").kernel.shape == (1, 1, 32, 8)     # scale(32 * 0.25)
    assert t.get_layer("t/core/conv").kernel.shape == (3, 3, 8, 24)       # scale(32 * 0.75)
    assert t.get_layer("t/project/conv").kernel.shape == (1, 1, 24, 32)


def test_hard_swish_values():
    x = tf.constant([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0])
    expected = [0.0, 0.0, -1 * 2 / 6, 0.0, 1 * 4 / 6, 3.0, 5.0]
    np.testing.assert_allclose(blocks.HardSwish()(x).numpy(), expected, atol=1e-6)


def test_batchnorm_folding_is_exact():
    spec = ModelSpec("edgetpu", 3, 64, 0.25)
    from include.mobiledet.ssd import build_detector
    model = build_detector(spec)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(.5, 1.5, g.shape), rng.uniform(-.5, .5, b.shape),
                               rng.uniform(-.5, .5, m.shape), rng.uniform(.5, 2, v.shape)])
    with blocks.folded_batchnorm():
        folded = build_detector(spec)
    n = blocks.fold_batchnorm_weights(model, folded)
    assert n > 50 and not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    for a, b in zip(model(x, training=False), folded(x, training=False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_anchors_small_grid_by_hand():
    # two layers: scales 0.2 and 0.95 (+ 1.0 for the interpolated anchor of the last layer)
    a = anchor_gen.generate_anchors([(2, 2), (1, 1)])
    assert a.shape == (2 * 2 * 3 + 1 * 1 * 6, 4)
    # first cell of layer 0: centre (0.25, 0.25); anchors (0.1, 1), (0.2, 2), (0.2, 0.5)
    s2 = math.sqrt(2)
    np.testing.assert_allclose(a[0], [0.25, 0.25, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(a[1], [0.25, 0.25, 0.2 / s2, 0.2 * s2], atol=1e-6)
    np.testing.assert_allclose(a[2], [0.25, 0.25, 0.2 * s2, 0.2 / s2], atol=1e-6)
    # order is (y, x, anchor): the 2nd cell is (y=0.25, x=0.75)
    np.testing.assert_allclose(a[3][:2], [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(a[6][:2], [0.75, 0.25], atol=1e-6)
    # layer 1, one cell at the centre: 5 aspect ratios at 0.95, then sqrt(0.95 * 1.0) square
    last = a[12:]
    np.testing.assert_allclose(last[:, :2], 0.5, atol=1e-6)
    np.testing.assert_allclose(last[0, 2:], [0.95, 0.95], atol=1e-6)
    np.testing.assert_allclose(last[3, 2:], [0.95 / math.sqrt(3), 0.95 * math.sqrt(3)], atol=1e-6)
    np.testing.assert_allclose(last[5, 2:], [math.sqrt(0.95)] * 2, atol=1e-6)


def test_anchor_counts_per_layer():
    assert anchor_gen.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]


def test_box_coder_round_trip_numpy_and_tf():
    rng = np.random.default_rng(0)
    anchors = anchor_gen.generate_anchors([(4, 4), (2, 2)])
    y0, x0 = rng.uniform(0, 0.6, (2, len(anchors)))
    boxes = np.stack([y0, x0, y0 + rng.uniform(0.05, 0.4, len(anchors)),
                      x0 + rng.uniform(0.05, 0.4, len(anchors))], -1).astype(np.float32)
    codes = box_coder.encode(boxes, anchors)
    np.testing.assert_allclose(box_coder.decode(codes, anchors), boxes, atol=1e-5)
    tf_codes = box_coder.encode(tf.constant(boxes), tf.constant(anchors))
    np.testing.assert_allclose(tf_codes.numpy(), codes, atol=1e-4)
    np.testing.assert_allclose(box_coder.decode(tf_codes, tf.constant(anchors)).numpy(), boxes,
                               atol=1e-5)
    # a box equal to its anchor encodes to zeros
    np.testing.assert_allclose(box_coder.encode(anchor_gen.anchors_to_corners(anchors), anchors),
                               0, atol=1e-4)


@pytest.mark.parametrize("kwargs, where", [
    (dict(variant="mobilenet"), "variant"),
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=-3), "num_classes"),
    (dict(input_size=32), "input_size"),
    (dict(input_size=300), "input_size"),
    (dict(depth_multiplier=0), "depth_multiplier"),
])
def test_bad_settings_name_the_setting(kwargs, where):
    with pytest.raises(ConfigError) as err:
        ModelSpec(**kwargs)
    assert err.value.where == where
    assert "allowed" in str(err.value) or "must be" in str(err.value)


def test_describe_cli_error_and_json():
    cli = [sys.executable, "-m", "include.cli"]
    bad = subprocess.run(cli + ["describe", "--variant", "mobilenet"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "variant" in bad.stderr and "cpu, edgetpu, dsp, gpu" in bad.stderr
    ok = subprocess.run(cli + ["describe", "--variant", "edgetpu", "--num-classes", "3",
                               "--input-size", "64", "--depth-multiplier", "0.25", "--json"],
                        capture_output=True, text=True, check=True)
    import json
    d = json.loads(ok.stdout)
    assert d["variant"] == "edgetpu" and d["anchors"] == 4 * 4 * 3 + (4 + 1 + 1 + 1 + 1) * 6
    assert {"params", "trainable_params", "macs", "feature_maps"} <= set(d)
