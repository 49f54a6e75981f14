"""SSD training: target assignment, losses, augmentation, the training loop, QAT fine-tuning."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

import include  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from include.errors import CheckpointError, ConfigError, DataError
from include.mobiledet import augment as aug
from include.mobiledet import box_coder
from include.mobiledet.targets import TargetAssigner, argmax_match, ioa, iou

TINY = dict(input_size=64, depth_multiplier=0.25)


def _corners_to_anchors(corners):
    c = np.asarray(corners, np.float32)
    return np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                     c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], axis=1)


# Four quadrant anchors and a small centre one, as corners (ymin, xmin, ymax, xmax).
QUADRANTS = [[0, 0, .5, .5], [0, .5, .5, 1], [.5, 0, 1, .5], [.5, .5, 1, 1], [.4, .4, .6, .6]]


# ============================================================================ target assignment
def test_iou_and_ioa_by_hand():
    a = np.array([[0, 0, .5, .5]], np.float32)
    b = np.array([[0, 0, .5, .45], [.25, .25, .75, .75], [.6, .6, 1, 1]], np.float32)
    np.testing.assert_allclose(iou(a, b), [[0.9, 0.0625 / 0.4375, 0.0]], rtol=1e-5)
    np.testing.assert_allclose(ioa(a, b), [[0.9, 0.25, 0.0]], rtol=1e-5)


def test_argmax_match_thresholds_and_forced_match():
    sim = np.array([[0.60, 0.10],    # a0 -> box 0 (>= 0.5)
                    [0.49, 0.30],    # a1: best 0.49 < 0.5 -> background
                    [0.20, 0.45],    # a2: 0.45 < 0.5, but it is box 1's best anchor -> forced
                    [0.50, 0.00]],   # a3: exactly 0.5 -> positive
                   np.float32)
    np.testing.assert_array_equal(argmax_match(sim), [0, -1, 1, 0])
    np.testing.assert_array_equal(argmax_match(sim, force_match=False), [0, -1, -1, 0])
    # between the two thresholds -> ignored (-2)
    np.testing.assert_array_equal(argmax_match(sim, 0.55, 0.46, force_match=False), [0, -2, -1, -2])
    # two boxes share the same best anchor: the first box keeps it (TFOD's one-hot argmax)
    tie = np.array([[0.3, 0.4], [0.1, 0.2]], np.float32)
    np.testing.assert_array_equal(argmax_match(tie), [0, -1])
    assert (argmax_match(np.zeros((3, 0), np.float32)) == -1).all()


def test_targets_forced_match_and_one_hot_classes():
    assigner = TargetAssigner(_corners_to_anchors(QUADRANTS), num_classes=3)
    boxes = np.array([[0, 0, .5, .45],           # IoU 0.9 with anchor 0
                      [.45, .45, .55, .55]],     # IoU 0.25 with anchor 4: only by forced match
                     np.float32)
    t = assigner(boxes, [2, 0], [False, False])
    np.testing.assert_array_equal(t["match"], [0, -1, -1, -1, 1])
    np.testing.assert_array_equal(t["box_weights"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(t["class_weights"], [1, 1, 1, 1, 1])
    expected = np.zeros((5, 4), np.float32)
    expected[0, 3] = 1          # class 2 -> column 3
    expected[4, 1] = 1          # class 0 -> column 1
    np.testing.assert_array_equal(t["class_targets"], expected)   # background rows all zero
    np.testing.assert_array_equal(t["box_targets"][1:4], 0)
    # the other TFOD convention: a one-hot background column for negatives
    onehot = TargetAssigner(_corners_to_anchors(QUADRANTS), 3, encode_background_as_zeros=False)
    expected[1:4, 0] = 1
    np.testing.assert_array_equal(onehot(boxes, [2, 0], [False, False])["class_targets"], expected)


def test_crowd_regions_are_ignored_not_matched():
    assigner = TargetAssigner(_corners_to_anchors(QUADRANTS), num_classes=3)
    boxes = np.array([[0, 0, .5, .45], [.5, .5, 1, 1]], np.float32)   # second one: a crowd
    t = assigner(boxes, [1, 2], [False, True])
    # anchor 3 equals the crowd box (IoU 1) yet is not a positive: it is ignored
    np.testing.assert_array_equal(t["match"], [0, -1, -1, -2, -1])
    np.testing.assert_array_equal(t["box_weights"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(t["class_weights"], [1, 1, 1, 0, 1])   # anchor 4: ioa 0.25
    assert t["class_targets"][:, 3].sum() == 0                      # crowd class never a target
    # an image with only a crowd box: no positives, the crowd anchor still ignored
    only = assigner(boxes[1:], [2], [True])
    assert only["box_weights"].sum() == 0
    np.testing.assert_array_equal(only["class_weights"], [1, 1, 1, 0, 1])
    empty = assigner(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0, bool))
    assert not empty["class_targets"].any() and empty["box_weights"].sum() == 0
    assert empty["class_weights"].all()


def test_box_targets_decode_back_to_ground_truth():
    from include.mobiledet.spec import ModelSpec
    from include.mobiledet.ssd import anchors_for

    anchors = anchors_for(ModelSpec("cpu", 3, **TINY))
    rng = np.random.default_rng(1)
    yx = rng.uniform(0, 0.6, (6, 2))
    hw = rng.uniform(0.08, 0.4, (6, 2))
    boxes = np.concatenate([yx, yx + hw], 1).astype(np.float32)
    t = TargetAssigner(anchors, 3)(boxes, rng.integers(0, 3, 6), np.zeros(6, bool))
    pos = t["box_weights"] > 0
    assert pos.sum() >= 6                                   # every box got at least its anchor
    assert set(t["match"][pos]) == set(range(6))
    decoded = box_coder.decode(t["box_targets"][pos], anchors[pos])
    np.testing.assert_allclose(decoded, boxes[t["match"][pos]], atol=1e-5)


# ============================================================================ losses
def test_focal_loss_by_hand():
    from include.mobiledet.losses import sigmoid_focal_loss

    p = 1 / (1 + math.exp(-2.0))
    pos = 0.75 * (1 - p) ** 2 * -math.log(p)          # label 1, logit 2
    neg = 0.25 * p ** 2 * -math.log(1 - p)            # label 0, logit 2
    out = sigmoid_focal_loss(np.array([2.0, 2.0], np.float32), np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(out.numpy(), [pos, neg], rtol=1e-5)
    # gamma 0, alpha 0.5 is half the binary cross-entropy
    ce = sigmoid_focal_loss(np.array([2.0], np.float32), np.array([1.0], np.float32), 0.5, 0.0)
    np.testing.assert_allclose(ce.numpy(), [0.5 * -math.log(p)], rtol=1e-5)


def test_ssd_loss_weights_and_normalisation_by_matches():
    from include.mobiledet.losses import sigmoid_focal_loss, smooth_l1, ssd_loss

    np.testing.assert_allclose(smooth_l1(np.array([[0.5, 2.0, 0, -3.0]], np.float32),
                                         np.zeros((1, 4), np.float32)).numpy(),
                               [0.125 + 1.5 + 0 + 2.5])
    rng = np.random.default_rng(0)
    B, N, C1 = 2, 5, 4
    box = rng.normal(size=(B, N, 4)).astype(np.float32)
    box_t = rng.normal(size=(B, N, 4)).astype(np.float32)
    logits = rng.normal(size=(B, N, C1)).astype(np.float32)
    cls_t = np.eye(C1, dtype=np.float32)[rng.integers(0, C1, (B, N))]
    box_w = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], np.float32)       # 3 matches
    cls_w = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], np.float32)
    out = ssd_loss(box, logits, box_t, cls_t, box_w, cls_w)
    loc = (smooth_l1(box, box_t).numpy() * box_w).sum() / 3 / 4    # by matches and code size
    cls = (sigmoid_focal_loss(logits, cls_t).numpy() * cls_w[..., None]).sum() / 3
    assert float(out["num_matches"]) == 3
    np.testing.assert_allclose(float(out["localization"]), loc, rtol=1e-5)
    np.testing.assert_allclose(float(out["classification"]), cls, rtol=1e-5)
    np.testing.assert_allclose(float(out["total"]), loc + cls, rtol=1e-5)
    # no matches: normalised by 1, not by 0
    none = ssd_loss(box, logits, box_t, cls_t, np.zeros_like(box_w), cls_w)
    assert float(none["localization"]) == 0.0 and math.isfinite(float(none["classification"]))


# ============================================================================ augmentation
def _targets(boxes, classes=None, crowd=None):
    boxes = np.asarray(boxes, np.float32)
    k = len(boxes)
    return {"boxes": boxes, "classes": np.arange(k, dtype=np.int32) if classes is None else
            np.asarray(classes, np.int32),
            "is_crowd": np.zeros(k, bool) if crowd is None else np.asarray(crowd, bool)}


def test_horizontal_flip_mirrors_x():
    img = np.zeros((10, 20, 3), np.uint8)
    img[2, 0] = 255
    out, t = aug.horizontal_flip(img, _targets([[0.1, 0.2, 0.3, 0.4]]))
    assert out[2, 19].tolist() == [255, 255, 255] and out[2, 0].tolist() == [0, 0, 0]
    np.testing.assert_allclose(t["boxes"], [[0.1, 0.6, 0.3, 0.8]], atol=1e-6)
    np.testing.assert_allclose(aug.flip_boxes(t["boxes"]), [[0.1, 0.2, 0.3, 0.4]], atol=1e-6)


def test_crop_moves_clips_and_drops_boxes():
    img = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    t = _targets([[0.2, 0.2, 0.4, 0.4],     # inside the window
                  [0.5, 0.05, 0.7, 0.15],   # centre x 0.1 is left of the window: dropped
                  [0.5, 0.4, 0.66, 0.7]],   # centre inside, bottom and right cut by the window
                 classes=[4, 5, 6])
    out, ct = aug.crop(img, t, (10, 20, 60, 120))
    np.testing.assert_array_equal(out, img[10:60, 20:120])
    np.testing.assert_allclose(ct["boxes"], [[0.2, 0.2, 0.6, 0.6], [0.8, 0.6, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(ct["classes"], [4, 6])
    assert ct["is_crowd"].shape == (2,)


def test_random_augment_keeps_boxes_valid_and_is_deterministic():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    yx = rng.uniform(0, 0.7, (5, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(0.05, 0.3, (5, 2))], 1).clip(0, 1)
    t = _targets(boxes, crowd=[False, False, True, False, False])
    cropped = 0
    for seed in range(60):
        out, at = aug.augment(img, t, np.random.default_rng(seed))
        again, bt = aug.augment(img, t, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, again)
        np.testing.assert_array_equal(at["boxes"], bt["boxes"])
        b = at["boxes"]
        assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8 and min(out.shape[:2]) >= 1
        assert b.dtype == np.float32 and b.shape[1] == 4
        assert (b >= 0).all() and (b <= 1).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert len(at["classes"]) == len(at["is_crowd"]) == len(b)
        cropped += out.shape[:2] != img.shape[:2]
    assert cropped > 30          # ~85% of the images are cropped
    # min_object_covered = 1: the window contains one whole object
    win = aug.sample_crop_window(np.random.default_rng(0), 90, 120, boxes[:1], 1.0)
    y0, x0, y1, x1 = win
    by0, bx0, by1, bx1 = boxes[0] * [90, 120, 90, 120]
    assert y0 <= by0 + 1e-6 and x0 <= bx0 + 1e-6 and y1 >= by1 - 1e-6 and x1 >= bx1 - 1e-6


# ============================================================================ schedule, pipeline
def test_cosine_schedule_with_warmup():
    import tensorflow as tf

    from include.mobiledet.train import _make_schedule, cosine_with_warmup

    f = lambda s: cosine_with_warmup(s, 0.1, 100, 10, 0.02)   # noqa: E731
    assert f(0) == pytest.approx(0.02) and f(5) == pytest.approx(0.06)
    assert f(10) == pytest.approx(0.1) and f(55) == pytest.approx(0.05) and f(100) == pytest.approx(0)
    sched = _make_schedule(0.1, 100, 10, 0.02)
    for s in (0, 5, 10, 37, 55, 99, 100):
        assert float(sched(tf.constant(s))) == pytest.approx(f(s), abs=1e-6)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from include.data.synth import synthesize

    root = tmp_path_factory.mktemp("train")
    data = root / "synth"
    synthesize(data, images=10, size=64, seed=1, val_fraction=0.2)
    return root, data


def test_batch_stream_shapes_and_repeatable(tiny_data):
    from include.data.coco import open_dataset
    from include.mobiledet.spec import ModelSpec
    from include.mobiledet.ssd import anchors_for
    from include.mobiledet.train import BatchStream

    ds = open_dataset(tiny_data[1], "train")
    anchors = anchors_for(ModelSpec("cpu", ds.num_classes, **TINY))
    assigner = TargetAssigner(anchors, ds.num_classes)
    with BatchStream(ds, assigner, 64, 3, seed=5) as a, BatchStream(ds, assigner, 64, 3, seed=5) as b:
        x, y = a.next(), b.next()
        a.next()
    n = len(anchors)
    assert x["images"].shape == (3, 64, 64, 3) and x["images"].dtype == np.float32
    assert x["images"].min() >= -1 and x["images"].max() <= 1
    assert x["class_targets"].shape == (3, n, ds.num_classes + 1)
    assert x["box_targets"].shape == (3, n, 4) and x["class_weights"].shape == (3, n)
    np.testing.assert_array_equal(x["class_targets"].sum(-1), x["box_weights"])  # one-hot positives
    assert x["box_weights"].sum() >= 3                               # each image has objects
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


# ============================================================================ training
def _has_fake_quant(model) -> bool:
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    s = int(model.input_shape[1])
    graph = fn.get_concrete_function(tf.TensorSpec([1, s, s, 3], tf.float32)).graph
    return any(op.type.startswith("FakeQuantWithMinMaxVars") for op in graph.get_operations())


@pytest.fixture(scope="module")
def float_ckpt(tiny_data):
    """25 steps of edgetpu training on 8 tiny images, no augmentation (so the loss can fall)."""
    from include.mobiledet.train import train

    root, data = tiny_data
    out = root / "float"
    result = train(data, out, "edgetpu", 25, batch=4, seed=0, progress=False, keep_model=True,
                   learning_rate=0.05, warmup_steps=3, augment="none", **TINY)
    return out, result


def test_float_training_writes_a_complete_checkpoint(float_ckpt, tiny_data):
    from include.data.coco import open_dataset
    from include.mobiledet.checkpoint import load_checkpoint, read_checkpoint_meta

    out, result = float_ckpt
    files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(files) == {"weights.h5", "pipeline.config", "checkpoint.json"}
    assert files["checkpoint.json"] >= max(files.values())        # written last
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    meta = read_checkpoint_meta(out)
    ds = open_dataset(tiny_data[1], "train")
    assert meta["qat"] is False and meta["steps"] == 25 and meta["variant"] == "edgetpu"
    assert (meta["num_classes"], meta["input_size"], meta["depth_multiplier"]) == (5, 64, 0.25)
    assert meta["data_fingerprint"] == ds.fingerprint()
    assert meta["label_map"]["0"] == {"name": ds.class_names[0], "category_id": ds.category_ids[0]}
    tr = meta["training"]
    assert tr["batch"] == 4 and tr["learning_rate"]["base"] == 0.05
    assert tr["optimizer"] == {"name": "sgd", "momentum": 0.9, "weight_decay": 4e-5}
    assert tr["augmentation"]["preset"] == "none" and tr["augmentation"]["flip_probability"] == 0
    assert tr["images_per_second"] > 0 and tr["seconds"] > 0
    # the loss falls on a tiny set
    assert tr["final_loss"] < 0.5 * tr["initial_loss"]
    assert "model" not in json.loads((out / "checkpoint.json").read_text())
    # loads back with the same outputs as the trained model
    model, _ = load_checkpoint(out)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    for a, b in zip(model(x, training=False), result["model"](x, training=False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_qat_fine_tune_writes_fake_quant_checkpoint(float_ckpt, tiny_data):
    from include.mobiledet.checkpoint import load_checkpoint
    from include.mobiledet.train import train

    root, data = tiny_data
    out = root / "qat"
    result = train(data, out, "edgetpu", 2, batch=2, init=float_ckpt[0], qat=True,
                   progress=False, optimizer="adam", augment="flip")
    assert result["qat"] is True and result["input_size"] == 64
    assert result["parent_checkpoint"] == str(float_ckpt[0].resolve())
    tr = result["training"]
    assert tr["learning_rate"]["base"] == pytest.approx(0.006 * 2 / 32 * 0.1)
    assert tr["optimizer"]["name"] == "adam"
    assert tr["augmentation"]["preset"] == "flip" and tr["augmentation"]["crop"] is False
    model, meta = load_checkpoint(out)
    assert meta["qat"] is True and _has_fake_quant(model)
    assert not _has_fake_quant(float_ckpt[1]["model"])


def test_steps_and_batch_must_be_positive(tiny_data):
    from include.mobiledet.train import train

    with pytest.raises(ConfigError, match="steps"):
        train(tiny_data[1], tiny_data[0] / "x", "edgetpu", 0)
    with pytest.raises(ConfigError, match="batch"):
        train(tiny_data[1], tiny_data[0] / "x", "edgetpu", 5, batch=-1)
    with pytest.raises(ConfigError, match="--optimizer"):
        train(tiny_data[1], tiny_data[0] / "x", "edgetpu", 5, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="--augment"):
        train(tiny_data[1], tiny_data[0] / "x", "edgetpu", 5, augment="mosaic")
    assert not (tiny_data[0] / "x").exists()


def test_data_dir_that_is_not_coco(tmp_path):
    from include.mobiledet.train import train

    (tmp_path / "notcoco").mkdir()
    (tmp_path / "notcoco" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="annotation"):
        train(tmp_path / "notcoco", tmp_path / "out", "edgetpu", 5, **TINY)
    assert not (tmp_path / "out").exists()


def test_qat_errors(float_ckpt, tiny_data, tmp_path):
    from include.mobiledet.train import train

    data = tiny_data[1]
    with pytest.raises(ConfigError, match="--init|init"):
        train(data, tmp_path / "q", "edgetpu", 5, qat=True)
    with pytest.raises(ConfigError, match="cpu"):
        train(data, tmp_path / "q", "cpu", 5, qat=True, init=float_ckpt[0])
    with pytest.raises(CheckpointError) as missing:
        train(data, tmp_path / "q", "edgetpu", 5, qat=True, init=tmp_path / "nope")
    assert "nope" in str(missing.value)
    with pytest.raises(CheckpointError) as other:
        train(data, tmp_path / "q", "gpu", 5, qat=True, init=float_ckpt[0])
    assert "'edgetpu'" in str(other.value) and "'gpu'" in str(other.value)
    with pytest.raises(CheckpointError, match="input_size"):
        train(data, tmp_path / "q", "edgetpu", 5, init=float_ckpt[0], input_size=96)
    assert not (tmp_path / "q").exists()


def test_cli_parses_and_reports_errors(tiny_data, tmp_path):
    from include.mobiledet import train_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train_commands.register(sub)
    args = parser.parse_args(["train", "--variant", "edgetpu", "--data", str(tiny_data[1]),
                              "--out", str(tmp_path / "c"), "--steps", "0", "--batch", "4",
                              "--input-size", "64", "--depth-multiplier", "0.25", "--seed", "3",
                              "--lr", "0.01", "--json"])
    assert (args.variant, args.batch, args.input_size, args.depth_multiplier, args.seed,
            args.lr, args.qat, args.json) == ("edgetpu", 4, 64, 0.25, 3, 0.01, False, True)
    with pytest.raises(ConfigError, match="--steps"):
        args.func(args)
    q = parser.parse_args(["train", "--variant", "edgetpu", "--data", "d", "--out", "o",
                           "--steps", "5", "--qat", "--init", "ck"])
    assert q.qat and q.init == "ck"
    assert (q.optimizer, q.augment) == ("momentum", "ssd")
    o = parser.parse_args(["train", "--variant", "edgetpu", "--data", "d", "--out", "o",
                           "--steps", "5", "--optimizer", "adam", "--augment", "flip"])
    assert (o.optimizer, o.augment) == ("adam", "flip")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--variant", "nope", "--data", "d", "--out", "o", "--steps", "5"])


def test_cli_trains_then_evaluates_the_held_out_split(tiny_data, tmp_path, capsys):
    import json as _json

    from include.mobiledet import train_commands

    parser = argparse.ArgumentParser()
    train_commands.register(parser.add_subparsers(dest="command"))
    base = ["train", "--variant", "edgetpu", "--data", str(tiny_data[1]), "--steps", "2",
            "--batch", "2", "--input-size", "64", "--depth-multiplier", "0.25",
            "--optimizer", "adam", "--augment", "flip"]
    # a split that is not there fails before any training, and writes nothing
    bad = parser.parse_args(base + ["--out", str(tmp_path / "bad"), "--eval-split", "test"])
    with pytest.raises(DataError, match="test"):
        bad.func(bad)
    assert not (tmp_path / "bad").exists()
    args = parser.parse_args(base + ["--out", str(tmp_path / "c"), "--eval-split", "val",
                                     "--json"])
    assert args.func(args) == 0
    out = _json.loads(capsys.readouterr().out)
    ev = out["evaluation"]
    assert ev["split"] == "val" and ev["images"] == 2        # 20% of the 10 tiny images
    assert 0.0 <= ev["AP50"] <= 1.0 and 0.0 <= ev["AP"] <= ev["AP50"]
    assert out["training"]["optimizer"]["name"] == "adam"
    assert (tmp_path / "c" / "checkpoint.json").is_file()
