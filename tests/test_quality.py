"""The quality checks: COCO evaluation, output-contract validation (GX), benchmark, pictures.

Models are tiny real detectors (3 classes, input 64, multiplier 0.25) built once per session
through the product's own checkpoint -> export -> convert code, plus a few hand-made .tflite
files that break the output contract on purpose.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from include.errors import ConfigError, DataError, ModelContractError, ValidationFailed
from include.quality import evaluate as ev
from include.quality.evaluate import METRIC_NAMES, coco_eval, evaluate, to_coco_results

try:
    from models import make_image_folder, shared_export
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.models import make_image_folder, shared_export

PRECISIONS = ("float32", "dynamic", "float16", "int8", "uint8")

# COCO 2017's 80 categories: real, non-contiguous ids 1..90 with ten gaps.
COCO_GAPS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_IDS = [i for i in range(1, 91) if i not in COCO_GAPS]


# ============================================================================ fixtures
@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="session")
def tiny_models(work):
    """{precision: path}, built on first use from the session's shared exports (one float export
    for the four float-graph recipes, one QAT export for uint8; shared with the other test
    files, as tests/models.make_tflite does)."""
    from include.convert.converter import convert

    built: dict[str, Path] = {}

    def get(precision: str) -> Path:
        if precision not in built:
            export = shared_export(qat=precision == "uint8")
            calibration = make_image_folder(work / "calib") if precision == "int8" else None
            out = work / "models" / f"edgetpu_{precision}.tflite"
            convert(export, precision, out, calibration=calibration, calibration_count=8)
            built[precision] = out
        return built[precision]

    return get


@pytest.fixture(scope="session")
def synth_data(work) -> Path:
    from include.data.synth import synthesize

    synthesize(work / "synth", 12, size=64, seed=0, val_fraction=0.5)
    return work / "synth"


def _crafted(path: Path, *, boxes=None, classes=None, scores=None, num=10.0, d=10, size=64,
             classifier=False) -> Path:
    """A .tflite whose outputs have the post-process op's shapes (boxes [1,D,4], classes [1,D],
    scores [1,D], num [1], in that order) but whatever values we choose; or a classifier."""
    import tensorflow as tf

    boxes = np.tile([[0.1, 0.2, 0.5, 0.6]], (d, 1)) if boxes is None else np.asarray(boxes)
    classes = np.zeros(d) if classes is None else np.asarray(classes)
    scores = np.linspace(0.9, 0.1, d) if scores is None else np.asarray(scores)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    def f(x):
        zero = tf.reduce_mean(x) * 0.0  # keeps the input part of the graph
        if classifier:
            return tf.reduce_mean(x, axis=[1, 2]) @ tf.ones([3, 5]) + zero
        return (tf.constant(boxes, tf.float32)[None] + zero,
                tf.constant(classes, tf.float32)[None] + zero,
                tf.constant(scores, tf.float32)[None] + zero,
                tf.constant([num], tf.float32) + zero)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


BROKEN = {  # name of the expectation each model breaks -> how
    "scores_in_unit_interval": dict(scores=np.linspace(1.5, 1.1, 10)),
    "scores_sorted_best_first": dict(scores=np.linspace(0.1, 0.9, 10)),
    "boxes_ymin_le_ymax": dict(boxes=np.tile([[0.6, 0.2, 0.3, 0.6]], (10, 1))),
    "classes_whole_in_range": dict(classes=np.full(10, 1.5)),
    "num_detections_in_range": dict(num=12.0),
    "values_finite": dict(boxes=np.tile([[0.1, np.nan, 0.5, 0.6]], (10, 1))),
}


@pytest.fixture(scope="session")
def crafted(work):
    folder = work / "crafted"
    models = {name: _crafted(folder / f"{name}.tflite", **kw) for name, kw in BROKEN.items()}
    models["good"] = _crafted(folder / "good.tflite")
    models["empty"] = _crafted(folder / "empty.tflite", num=0.0, scores=np.zeros(10))
    models["classifier"] = _crafted(folder / "classifier.tflite", classifier=True)
    return models


def _write_coco_like(folder: Path) -> Path:
    """A real-COCO-like split: 80 categories with COCO's ids, a crowd region, images of
    different sizes (one portrait, one landscape, one square) with their annotations."""
    names = [f"category_{i}" for i in COCO_IDS]
    names[0], names[2], names[3] = "person", "car", "motorcycle"
    rng = np.random.default_rng(1)
    sizes = [(96, 64), (48, 80), (64, 64)]  # (width, height)
    images, anns = [], []
    (folder / "val2017").mkdir(parents=True)
    for k, (w, h) in enumerate(sizes):
        name = f"{k + 1:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / "val2017" / name)
        images.append({"id": 100 + k, "file_name": name, "width": w, "height": h})
        for j, cid in enumerate((1, 3, 4, 90)):
            x, y = 2 + 3 * j, 4 + 2 * j
            bw, bh = w / 3, h / 3
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": cid,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 1,
                 "bbox": [40.0, 30.0, 40.0, 30.0], "area": 1200.0, "iscrowd": 1,
                 "segmentation": {"counts": [0, 96 * 64], "size": [64, 96]}})
    ann_file = folder / "annotations" / "instances_val2017.json"
    ann_file.parent.mkdir(parents=True)
    ann_file.write_text(json.dumps({
        "info": {"description": "COCO-like"}, "images": images, "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": "thing"}
                       for i, n in zip(COCO_IDS, names)]}))
    return ann_file


@pytest.fixture(scope="session")
def coco_like(work) -> Path:
    return _write_coco_like(work / "coco_like")


def _check_metrics(metrics: dict):
    assert list(metrics) == list(METRIC_NAMES)
    for k, v in metrics.items():
        assert v == -1.0 or 0.0 <= v <= 1.0, (k, v)


def _cli(argv, capsys):
    """Run the real `mobiledet` main with only this area's verbs registered."""
    import include.cli as cli

    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ("include.quality.commands",)
    try:
        rc = cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved
    out = capsys.readouterr()
    return rc, out.out, out.err


# ============================================================================ pycocotools sanity
def test_ground_truth_as_detections_scores_ap_1(coco_like):
    gt = json.loads(coco_like.read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    m = coco_eval(coco_like, dets, [im["id"] for im in gt["images"]])
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)
    assert m["AR100"] == pytest.approx(1.0)
    _check_metrics(m)


def test_no_detections_score_ap_0_not_undefined(coco_like):
    m = coco_eval(coco_like, [], per_category=True)
    assert m["AP"] == 0.0 and m["AP50"] == 0.0 and m["AR100"] == 0.0
    assert all(c["AP"] == 0.0 for c in m["per_category"] if c["ground_truth"])


def test_boxes_are_scaled_by_the_original_image_size():
    dets = {"boxes": np.array([[0.25, 0.1, 0.75, 0.5], [-0.1, 0.9, 0.5, 1.2]], np.float32),
            "classes": np.array([0, 2]), "scores": np.array([0.9, 0.4], np.float32)}
    out, dropped = to_coco_results(7, dets, width=200, height=100, class_to_category={0: 1, 2: 4})
    assert dropped == 0
    assert out[0] == {"image_id": 7, "category_id": 1, "bbox": [20.0, 25.0, 80.0, 50.0],
                      "score": 0.9}
    assert out[1]["category_id"] == 4
    assert out[1]["bbox"] == pytest.approx([180.0, 0.0, 20.0, 50.0])  # clipped to the image
    out, dropped = to_coco_results(7, dets, 200, 100, class_to_category={0: 1})
    assert len(out) == 1 and dropped == 1  # class 2 has no category in the dataset


# ============================================================================ evaluate
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_evaluate_end_to_end(precision, tiny_models, synth_data, tmp_path):
    out = tmp_path / "results.json"
    r = evaluate(tiny_models(precision), synth_data, out=out, threads=2, show_progress=False)
    _check_metrics(r["metrics"])
    assert r["split"] == "val" and r["images"] == 6 and r["threads"] == 2
    assert r["class_mapping"].startswith("label map")
    assert {c["name"] for c in r["per_category"]} == {"circle", "square", "triangle"}
    assert r["images_per_s"] > 0 and r["seconds"] > 0
    written = json.loads(out.read_text())
    assert len(written) == r["detections"] > 0
    assert set(written[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {d["category_id"] for d in written} <= {1, 3, 4}

    # The written results, scored by pycocotools by hand, give the same numbers.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(r["data"])
        e = COCOeval(gt, gt.loadRes(str(out)), "bbox")
        e.params.imgIds = sorted({im["id"] for im in gt.dataset["images"]})
        e.params.catIds = [1, 3, 4]
        e.evaluate(), e.accumulate(), e.summarize()
    assert e.stats[0] == pytest.approx(r["metrics"]["AP"], abs=1e-6)
    assert e.stats[1] == pytest.approx(r["metrics"]["AP50"], abs=1e-6)


def test_evaluate_strategies_give_the_same_detections(tiny_models, synth_data, tmp_path):
    a = evaluate(tiny_models("int8"), synth_data, threads=2, strategy="workers",
                 out=tmp_path / "a.json", show_progress=False)
    b = evaluate(tiny_models("int8"), synth_data, threads=1, strategy="interpreter",
                 out=tmp_path / "b.json", show_progress=False)
    assert json.loads((tmp_path / "a.json").read_text()) == \
        json.loads((tmp_path / "b.json").read_text())
    assert a["metrics"] == b["metrics"]


def test_evaluate_with_reference_reports_drop_and_agreement(tiny_models, synth_data):
    r = evaluate(tiny_models("int8"), synth_data, reference=tiny_models("float32"),
                 agreement_threshold=0.0, max_images=4, show_progress=False)
    assert r["images"] == 4
    _check_metrics(r["reference"]["metrics"])
    assert set(r["drop"]) == {"AP", "AP50"}
    assert r["drop"]["AP50"] == pytest.approx(r["reference"]["metrics"]["AP50"]
                                              - r["metrics"]["AP50"], abs=1e-6)
    a = r["agreement"]
    assert a["score_threshold"] == 0.0 and a["reference_boxes"] > 0
    assert 0.0 <= a["AP50"] <= 1.0
    _check_metrics(a["metrics"])

    # A model agrees perfectly with itself.
    same = evaluate(tiny_models("float32"), synth_data, reference=tiny_models("float32"),
                    agreement_threshold=0.0, max_images=4, show_progress=False)
    assert same["drop"] == {"AP": 0.0, "AP50": 0.0}
    assert same["agreement"]["AP50"] == pytest.approx(1.0)


def test_evaluate_on_a_real_coco_like_file(tiny_models, coco_like, tmp_path):
    out = tmp_path / "r.json"
    r = evaluate(tiny_models("float32"), coco_like, out=out, show_progress=False)
    _check_metrics(r["metrics"])
    assert r["images"] == 3 and r["split"] == "val2017"
    # class 0/1/2 -> COCO ids 1/3/4 through the checkpoint's label map, no remapping by hand
    assert [c["category_id"] for c in r["per_category"]] == [1, 3, 4]
    assert [c["name"] for c in r["per_category"]] == ["person", "car", "motorcycle"]
    gt = json.loads(coco_like.read_text())
    size = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    for d in json.loads(out.read_text()):
        w, h = size[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= w + 1e-3 and y + bh <= h + 1e-3

    # Without the conversion report the dataset's categories in id order are the classes.
    bare = tmp_path / "bare.tflite"
    shutil.copyfile(tiny_models("float32"), bare)
    r = evaluate(bare, coco_like, show_progress=False)
    assert r["class_mapping"] == "dataset categories in id order"
    assert [c["category_id"] for c in r["per_category"]] == [1, 2, 3]


def test_evaluate_model_without_detections_gives_ap_0(crafted, synth_data):
    r = evaluate(crafted["empty"], synth_data, show_progress=False)
    assert r["detections"] == 0
    assert r["metrics"]["AP"] == 0.0 and r["metrics"]["AP50"] == 0.0


def test_evaluate_cli_json_is_clean(tiny_models, synth_data, tmp_path, capsys):
    rc, out, err = _cli(["evaluate", "--model", str(tiny_models("float32")), "--data",
                         str(synth_data), "--max-images", "2", "--json",
                         "--out", str(tmp_path / "r.json")], capsys)
    assert rc == 0, err
    r = json.loads(out)  # nothing but the JSON on stdout (pycocotools' prints are captured)
    assert r["images"] == 2 and set(r["metrics"]) == set(METRIC_NAMES)


# ============================================================================ validate
@pytest.mark.parametrize("precision", PRECISIONS)
def test_validate_passes_for_every_precision(precision, tiny_models, tmp_path):
    s = ev_validate(tiny_models(precision), out_dir=tmp_path / "v", images=3)
    assert s["success"], s["failed"]
    assert s["failed"] == []
    assert s["output_rule"] == "names" and s["postprocess_op"]
    assert s["num_classes"] == 3 and s["num_classes_source"] == "post-process op options"
    expected = "uint8" if precision in ("int8", "uint8") else "float32"
    assert s["expected_input_dtype"] == [expected] and s["input"]["dtype"] == expected
    names = {e["name"] for e in s["expectations"]}
    assert {"scores_in_unit_interval", "scores_sorted_best_first", "boxes_ymin_le_ymax",
            "classes_whole_in_range", "output_shapes", "outputs_float32", "input_dtype",
            "num_detections_in_range", "values_finite"} <= names
    doc = json.loads(Path(s["result_json"]).read_text())
    assert doc["success"] is True and len(doc["suite_results"]) == 4
    assert Path(s["data_docs"]).is_file()
    assert "<html" in Path(s["data_docs"]).read_text().lower()


def ev_validate(model, **kw):
    from include.quality.validate import validate

    return validate(model, **kw)


def test_validate_with_dataset_images_and_default_out_dir(tiny_models, synth_data, work):
    model = work / "models" / "copy_float32.tflite"
    shutil.copyfile(tiny_models("float32"), model)
    s = ev_validate(model, data=synth_data, images=2)
    assert s["success"] and s["images"] == 2
    assert Path(s["result_json"]).parent == work / "models" / "copy_float32_validation"
    # No conversion report next to the copy: both input dtypes are accepted.
    assert s["expected_input_dtype"] == ["float32", "uint8"]


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_validate_names_the_broken_expectation(broken, crafted, tmp_path):
    s = ev_validate(crafted[broken], num_classes=3, out_dir=tmp_path / "v", images=2)
    assert not s["success"]
    assert broken in s["failed"]
    assert s["output_rule"] == "shapes" and not s["postprocess_op"]
    doc = json.loads(Path(s["result_json"]).read_text())
    assert doc["success"] is False
    assert Path(s["data_docs"]).is_file()


def test_validate_crafted_good_and_empty_models_pass(crafted, tmp_path):
    for name in ("good", "empty"):
        s = ev_validate(crafted[name], num_classes=3, out_dir=tmp_path / name, images=2)
        assert s["success"], (name, s["failed"])


def test_validate_wrong_input_dtype_and_cli_exit_code(tiny_models, tmp_path, capsys):
    model = tiny_models("int8")
    s = ev_validate(model, expect_input_dtype="float32", out_dir=tmp_path / "v", images=1)
    assert s["failed"] == ["input_dtype"]
    with pytest.raises(ValidationFailed, match="input_dtype"):
        ev_validate(model, expect_input_dtype="float32", out_dir=tmp_path / "v", images=1,
                    raise_on_failure=True)
    rc, out, err = _cli(["validate", "--model", str(model), "--expect-input-dtype", "float32",
                         "--images", "1", "--out-dir", str(tmp_path / "cli")], capsys)
    assert rc != 0 and "input_dtype" in err and str(model) in err
    rc, out, err = _cli(["validate", "--model", str(model), "--images", "1", "--json",
                         "--out-dir", str(tmp_path / "cli")], capsys)
    assert rc == 0 and json.loads(out)["success"] is True


def test_crafted_model_without_num_classes_asks_for_it(crafted):
    with pytest.raises(ConfigError, match="--num-classes"):
        ev_validate(crafted["good"], images=1)


def test_non_detector_outputs_are_a_contract_error(crafted, synth_data):
    from include.quality.benchmark import benchmark
    from include.quality.runner import Detector

    for call in (lambda m: Detector(m), lambda m: ev_validate(m, num_classes=3),
                 lambda m: evaluate(m, synth_data, show_progress=False),
                 lambda m: benchmark(m, runs=1)):
        with pytest.raises(ModelContractError, match="TFLite_Detection_PostProcess") as exc:
            call(crafted["classifier"])
        assert str(crafted["classifier"]) in str(exc.value)


# ============================================================================ runner
def test_detector_input_quantisation(tiny_models):
    from include.quality.runner import Detector

    det = Detector(tiny_models("int8"), threads=1)
    q = det.input_quantization
    assert det.input_dtype == np.uint8 and q["scale"] > 0
    x = np.linspace(-1, 1, 64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)
    p = det.prepare(x)
    assert p.dtype == np.uint8 and p.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(p[0], np.clip(np.rint(x / q["scale"] + q["zero_point"]),
                                                0, 255))
    d = det.detect(x)
    assert d["num"] == len(d["scores"]) <= det.max_detections == 10
    assert np.all(np.diff(d["scores"]) <= 0)
    with pytest.raises(DataError, match="preprocess"):
        det.prepare(np.zeros((32, 32, 3), np.float32))


# ============================================================================ benchmark
def test_benchmark_numbers_are_sane(tiny_models):
    from include.quality.benchmark import benchmark

    model = tiny_models("int8")
    r = benchmark(model, threads=1, warmup=2, runs=7)
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    assert r["runs"] == 7 and r["threads"] == 1 and r["warmup"] == 2
    assert r["model_size_bytes"] == Path(model).stat().st_size
    assert r["init_ms"] > 0 and r["throughput_per_s"] > 0
    assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0 and r["model_memory_mb"] >= 0
    with pytest.raises(ConfigError, match="--runs"):
        benchmark(model, runs=0)


# ============================================================================ visualize
def test_visualize_writes_the_original_size(tiny_models, synth_data, tmp_path, capsys):
    from include.quality.visualize import visualize

    src = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 90, 3), np.uint8)).save(src)
    out = tmp_path / "pics" / "out.png"
    r = visualize(tiny_models("float32"), src, out, threshold=0.0)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (90, 50)
    assert r["labels_source"] == "conversion report" and r["detections"]
    assert {d["name"] for d in r["detections"]} <= {"circle", "square", "triangle"}
    for d in r["detections"]:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 <= x1 <= 90 and 0 <= y0 <= y1 <= 50

    rc, stdout, err = _cli(["visualize", "--model", str(tiny_models("int8")), "--image",
                            str(src), "--labels", str(synth_data), "--threshold", "0",
                            "--out", str(tmp_path / "cli.png"), "--json"], capsys)
    assert rc == 0, err
    assert json.loads(stdout)["labels_source"].endswith("instances_val.json")
    assert Image.open(tmp_path / "cli.png").size == (90, 50)


# ============================================================================ clear errors
def test_missing_model_file(synth_data, tmp_path, capsys):
    from include.quality.benchmark import benchmark
    from include.quality.visualize import visualize

    missing = tmp_path / "nope.tflite"
    for call in (lambda: evaluate(missing, synth_data, show_progress=False),
                 lambda: ev_validate(missing), lambda: benchmark(missing),
                 lambda: visualize(missing, tmp_path / "x.png", tmp_path / "o.png")):
        with pytest.raises(ModelContractError, match="model file not found") as exc:
            call()
        assert str(missing) in str(exc.value)
    rc, _, err = _cli(["benchmark", "--model", str(missing)], capsys)
    assert rc == 2 and str(missing) in err


def test_missing_image_file(tiny_models, synth_data, tmp_path):
    from include.quality.visualize import visualize

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    victim = sorted((data / "val").iterdir())[1]
    victim.unlink()
    with pytest.raises(DataError, match="missing") as exc:
        evaluate(tiny_models("float32"), data, show_progress=False)
    assert victim.name in str(exc.value)
    with pytest.raises(DataError, match="not found") as exc:
        visualize(tiny_models("float32"), victim, tmp_path / "o.png")
    assert str(victim) in str(exc.value)


def test_annotation_file_without_coco_keys(tiny_models, tmp_path):
    bad = tmp_path / "instances_val.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="annotations") as exc:
        evaluate(tiny_models("float32"), bad, show_progress=False)
    assert str(bad) in str(exc.value)
    with pytest.raises(DataError) as exc:
        coco_eval(bad, [])
    assert str(bad) in str(exc.value)


def test_bad_settings(tiny_models, synth_data):
    with pytest.raises(ConfigError, match="--max-images"):
        evaluate(tiny_models("float32"), synth_data, max_images=0)
    with pytest.raises(ConfigError, match="strategy"):
        evaluate(tiny_models("float32"), synth_data, strategy="gpu")
    assert ev.default_split(synth_data) == "val"
