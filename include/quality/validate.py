"""The output contract of a detector .tflite, checked with Great Expectations (GX 1.x).

`validate(model)` runs K images through the model (from a COCO dataset or image folder, else
deterministic noise images; all through the product's `preprocess`), lays the raw outputs out as
four small tables and checks them with one GX expectation suite each:

    table       one row per               expectations (by name)
    input       model input               input_dtype, input_shape
    outputs     image x output tensor     four_outputs, output_shapes, outputs_float32
    images      image                     num_detections_in_range
    detections  valid slot (< num) of     values_finite, scores_in_unit_interval,
                an image                  scores_sorted_best_first, box_<coord>_in_range (x4),
                                          boxes_ymin_le_ymax, boxes_xmin_le_xmax,
                                          classes_whole_in_range

What the numbers mean:

* D (the detection slots) is the post-process op's `max_detections` when the model file has the
  op, else the boxes output's second dimension; expected shapes are boxes [1, D, 4], classes
  [1, D], scores [1, D], num_detections [1], all float32.
* num_classes comes from the post-process op's options, else from `num_classes=`
  (`--num-classes`), else from the conversion report next to the model; classes must be whole
  numbers in [0, num_classes).
* Only the first num_detections slots of an image are checked for values: slots past the count
  carry no detection and the op does not promise what is in them.
* Boxes: TFLite_Detection_PostProcess decodes anchor offsets and does NOT clip the boxes to the
  image (the untrained test models return ymin = -0.04, and trained SSD models return boxes past
  the border for objects the border cuts; whoever draws or scores them clips). So a coordinate
  may lie outside [0, 1] by up to BOX_MARGIN (0.5, half the image); one further out means broken
  box decoding (wrong scales or anchors). ymin <= ymax and xmin <= xmax exactly.
* The input dtype the recipe promised: uint8 for the int8 and uint8 precisions, float32 for
  float32, dynamic and float16 -- taken from `expect_input_dtype` (`--expect-input-dtype`), else
  the precision in the conversion report (`conversion.json` next to `model.tflite`, else
  `<stem>.conversion.json`); without either, float32 or uint8 are both accepted. The input shape
  is the report's input shape when it has one, else [1, S, S, 3] for a square S.

Written to `out_dir` (default `<model stem>_validation/` next to the model), replaced as a whole
when complete: `validation_result.json` (GX's suite validation results, one per table, with the
unexpected rows) and `data_docs/index.html` (GX Data Docs: the suites and their validation runs).

GX runs in an ephemeral context (nothing written outside out_dir), with analytics disabled
(GX_ANALYTICS_ENABLED=false is set before GX is imported: no network) and progress bars off.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from include.atomic import staged_dir
from include.errors import ConfigError, ValidationFailed

BOX_MARGIN = 0.5
DEFAULT_IMAGES = 8
RESULT_FILE = "validation_result.json"
DOCS_DIR = "data_docs"
ROLE_NAMES = {"boxes": "boxes", "classes": "classes", "scores": "scores",
              "num": "num_detections"}
INPUT_DTYPE_OF_PRECISION = {"float32": "float32", "dynamic": "float32", "float16": "float32",
                            "int8": "uint8", "uint8": "uint8"}
COORDS = ("ymin", "xmin", "ymax", "xmax")


# ====================================================================== inputs
def _images(data, count: int, size: int, seed: int = 0) -> tuple[list[tuple[str, np.ndarray]], str]:
    """K preprocessed images with names: from a dataset/folder, else deterministic noise."""
    from include.data.preprocess import preprocess

    if data is not None:
        from include.convert.calibration import calibration_files

        files = calibration_files(data, count, seed)
        return [(f.name, preprocess(f, size)) for f in files], str(data)
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        # Noise at a non-square size, so the resize of the preprocessing runs too.
        img = rng.integers(0, 256, (size + 8 * (i % 3), size + 16, 3), dtype=np.uint8)
        out.append((f"noise_{i:03d}", preprocess(img, size)))
    return out, "synthetic noise images (seeded)"


def _expected_input(report: dict | None, expect_input_dtype: str | None,
                    detector) -> tuple[list[str], str, list[int], str]:
    from include.quality.runner import find_precision

    if expect_input_dtype is not None:
        if expect_input_dtype not in ("uint8", "float32"):
            raise ConfigError(f"unknown input dtype {expect_input_dtype!r}.",
                              where="--expect-input-dtype", fix="use uint8 or float32.")
        dtypes, dsrc = [expect_input_dtype], "--expect-input-dtype"
    else:
        precision = find_precision(report)
        if precision in INPUT_DTYPE_OF_PRECISION:
            dtypes = [INPUT_DTYPE_OF_PRECISION[precision]]
            dsrc = f"precision {precision} in the conversion report"
        else:
            dtypes, dsrc = ["float32", "uint8"], "no recipe known: float32 or uint8 accepted"
    shape = None
    src = (report or {}).get("source") if isinstance(report, dict) else None
    if isinstance(src, dict) and isinstance(src.get("input_shape"), list):
        shape = [int(v) for v in src["input_shape"]]
    if shape is None:
        s = detector.input_size
        shape = [1, s, s, 3]
    return dtypes, dsrc, shape, "conversion report" if src else "model input size (square)"


def _num_classes(info: dict, num_classes: int | None, report: dict | None) -> tuple[int, str]:
    if info.get("num_classes"):
        return int(info["num_classes"]), "post-process op options"
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive whole number, got "
                              f"{num_classes!r}.", where="--num-classes", fix="use e.g. 90.")
        return num_classes, "--num-classes"
    src = (report or {}).get("source") or {}
    for holder in (src.get("postprocess"), src.get("spec")):
        if isinstance(holder, dict) and isinstance(holder.get("num_classes"), int):
            return int(holder["num_classes"]), "conversion report"
    raise ConfigError("the number of classes is unknown: the model has no readable "
                      "TFLite_Detection_PostProcess op and no conversion report.",
                      where="--num-classes", fix="pass --num-classes N (the classes the model "
                                                 "was trained with).")


# ====================================================================== tables
def build_tables(detector, images, max_detections: int, n_outputs: int,
                 expected_input: tuple[list[str], list[int]]) -> dict[str, Any]:
    """Run the images and lay the raw outputs out as the four DataFrames the suites check."""
    import pandas as pd

    expected_shapes = {"boxes": [1, max_detections, 4], "classes": [1, max_detections],
                       "scores": [1, max_detections], "num": [1]}
    inp = detector.input_detail
    input_rows = [{"name": inp["name"], "dtype": np.dtype(inp["dtype"]).name,
                   "shape": json.dumps([int(d) for d in inp["shape"]]),
                   "expected_shape": json.dumps(expected_input[1])}]
    out_rows, image_rows, det_rows = [], [], []
    for name, x in images:
        raw = detector.raw_outputs(x)
        for role, arr in raw.items():
            out_rows.append({"image": name, "role": ROLE_NAMES[role],
                             "name": detector.outputs[role]["name"],
                             "model_outputs": n_outputs, "dtype": arr.dtype.name,
                             "shape": json.dumps(list(arr.shape)),
                             "expected_shape": json.dumps(expected_shapes[role])})
        num = float(np.asarray(raw["num"], dtype=np.float64).reshape(-1)[0]) \
            if raw["num"].size else float("nan")
        image_rows.append({"image": name, "num_detections": num, "slots": max_detections})
        boxes = np.asarray(raw["boxes"], dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(raw["classes"], dtype=np.float64).reshape(-1)
        scores = np.asarray(raw["scores"], dtype=np.float64).reshape(-1)
        n = int(num) if np.isfinite(num) else 0
        n = max(0, min(n, len(scores), len(classes), len(boxes)))
        for slot in range(n):
            row = {"image": name, "slot": slot,
                   **{c: float(v) for c, v in zip(COORDS, boxes[slot])},
                   "class": float(classes[slot]), "score": float(scores[slot]),
                   "next_score": float(scores[slot + 1]) if slot + 1 < n else float("nan")}
            row["finite"] = bool(np.isfinite([row[c] for c in (*COORDS, "class", "score")]).all())
            det_rows.append(row)
    det_columns = ["image", "slot", *COORDS, "class", "score", "next_score", "finite"]
    return {"input": pd.DataFrame(input_rows),
            "outputs": pd.DataFrame(out_rows),
            "images": pd.DataFrame(image_rows),
            "detections": pd.DataFrame(det_rows, columns=det_columns)}


def _suites(gx, max_detections: int, num_classes: int,
            input_dtypes: list[str]) -> dict[str, list]:
    """{table: [expectation, ...]}; each expectation's meta carries its contract name."""
    E = gx.expectations

    def named(exp_cls, name, description, **kw):
        return exp_cls(meta={"name": name}, description=description, **kw)

    detections = [
        named(E.ExpectColumnValuesToBeInSet, "values_finite",
              "Boxes, classes and scores of valid detections are finite (no NaN, no inf).",
              column="finite", value_set=[True]),
        named(E.ExpectColumnValuesToBeBetween, "scores_in_unit_interval",
              "Scores lie in [0, 1].", column="score", min_value=0.0, max_value=1.0),
        named(E.ExpectColumnPairValuesAToBeGreaterThanB, "scores_sorted_best_first",
              "Within an image, each score is >= the next slot's score (non-increasing).",
              column_A="score", column_B="next_score", or_equal=True,
              ignore_row_if="either_value_is_missing"),
    ]
    for c in COORDS:
        detections.append(named(
            E.ExpectColumnValuesToBeBetween, f"box_{c}_in_range",
            f"Box {c} lies in [-{BOX_MARGIN}, {1 + BOX_MARGIN}]: normalised, unclipped boxes may "
            f"pass the image border by at most {BOX_MARGIN} of its side.",
            column=c, min_value=-BOX_MARGIN, max_value=1.0 + BOX_MARGIN))
    detections += [
        named(E.ExpectColumnPairValuesAToBeGreaterThanB, "boxes_ymin_le_ymax",
              "ymin <= ymax for every box.", column_A="ymax", column_B="ymin", or_equal=True),
        named(E.ExpectColumnPairValuesAToBeGreaterThanB, "boxes_xmin_le_xmax",
              "xmin <= xmax for every box.", column_A="xmax", column_B="xmin", or_equal=True),
        named(E.ExpectColumnValuesToBeInSet, "classes_whole_in_range",
              f"Classes are whole numbers in [0, {num_classes}).", column="class",
              value_set=list(range(num_classes))),
    ]
    return {
        "input": [
            named(E.ExpectColumnValuesToBeInSet, "input_dtype",
                  f"The input dtype is {' or '.join(input_dtypes)}.", column="dtype",
                  value_set=list(input_dtypes)),
            named(E.ExpectColumnPairValuesToBeEqual, "input_shape",
                  "The input shape is the one the recipe promised.", column_A="shape",
                  column_B="expected_shape"),
        ],
        "outputs": [
            named(E.ExpectColumnValuesToBeInSet, "four_outputs",
                  "The model has exactly four outputs (boxes, classes, scores, num_detections).",
                  column="model_outputs", value_set=[4]),
            named(E.ExpectColumnPairValuesToBeEqual, "output_shapes",
                  f"Output shapes are boxes [1, {max_detections}, 4], classes and scores "
                  f"[1, {max_detections}], num_detections [1].", column_A="shape",
                  column_B="expected_shape"),
            named(E.ExpectColumnValuesToBeInSet, "outputs_float32",
                  "Every output is float32.", column="dtype", value_set=["float32"]),
        ],
        "images": [
            named(E.ExpectColumnValuesToBeInSet, "num_detections_in_range",
                  f"num_detections is a whole number in [0, {max_detections}].",
                  column="num_detections", value_set=list(range(max_detections + 1))),
        ],
        "detections": detections,
    }


# ====================================================================== GX
def _import_gx():
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no usage statistics, no network
    import great_expectations as gx

    return gx


def _short(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _details(table: str, df, res) -> str:
    r = res.result or {}
    if res.exception_info and res.exception_info.get("raised_exception"):
        return f"GX raised: {res.exception_info.get('exception_message')}"
    if "observed_value" in r and r.get("unexpected_count") is None:
        return f"observed {r['observed_value']}"
    n = r.get("unexpected_count") or 0
    total = r.get("element_count", len(df))
    if not n:
        return f"{total} {table} rows checked"
    idx = list(r.get("unexpected_index_list") or r.get("partial_unexpected_index_list") or [])[:2]
    examples = []
    for i in idx:
        try:
            row = df.loc[i]
        except KeyError:
            continue
        where = f"image {row['image']}" if "image" in row else "model"
        if "slot" in row:
            where += f" slot {int(row['slot'])}"
        col = res.expectation_config.kwargs
        cols = [c for c in (col.get("column"), col.get("column_A"), col.get("column_B")) if c]
        examples.append(where + " (" + ", ".join(f"{c}={_short(row[c])}" for c in cols) + ")")
    if not examples:
        examples = [_short(v) for v in (r.get("partial_unexpected_list") or [])[:2]]
    return f"{n} of {total} {table} rows unexpected, e.g. " + "; ".join(examples)


def run_suites(tables: dict, suites: dict, docs_dir: Path) -> tuple[list, list[dict]]:
    """Run every table's suite in an ephemeral GX context; Data Docs go to docs_dir.

    Returns (GX suite validation results, [{name, table, type, success, details}]).
    """
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    context.add_data_docs_site(site_name="contract", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    source = context.data_sources.add_pandas("model_outputs")
    gx_results, rows = [], []
    for table, expectations in suites.items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"detector_contract_{table}"))
        for exp in expectations:
            suite.add_expectation(exp)
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"contract_{table}", data=batch, suite=suite))
        res = vd.run(batch_parameters={"dataframe": tables[table]}, result_format="COMPLETE")
        gx_results.append(res)
        for r in res.results:
            cfg = r.expectation_config
            rows.append({"name": (cfg.meta or {}).get("name", cfg.type), "table": table,
                         "type": cfg.type, "success": bool(r.success),
                         "details": _details(table, tables[table], r)})
    context.build_data_docs(site_names=["contract"])
    return gx_results, rows


# ====================================================================== the stage
def default_out_dir(model_path) -> Path:
    p = Path(model_path)
    return p.parent / f"{p.stem}_validation"


def validate(model, *, data=None, images: int = DEFAULT_IMAGES, out_dir=None,
             expect_input_dtype: str | None = None, num_classes: int | None = None,
             seed: int = 0, raise_on_failure: bool = False) -> dict:
    """Check the model's output contract (see the module docstring) -> summary dict.

    summary: success, expectations [{name, table, type, success, details}], failed [names],
    result_json, data_docs, and what was checked against (num_classes, max_detections, input).
    With raise_on_failure, a failed expectation raises ValidationFailed naming it.
    """
    from include.quality.runner import Detector, check_model_file, model_info, \
        read_conversion_json

    started = time.perf_counter()
    model = check_model_file(model)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"the image count must be a positive whole number, got {images!r}.",
                          where="--images", fix="use e.g. 8 (the default).")
    detector = Detector(model, threads=1)  # ModelContractError for non-post-process models
    info = model_info(model)
    report = read_conversion_json(model)
    n_classes, classes_src = _num_classes(info, num_classes, report)
    max_det = int(info["max_detections"] or detector.max_detections)
    input_dtypes, dtype_src, input_shape, shape_src = _expected_input(
        report, expect_input_dtype, detector)
    imgs, image_source = _images(data, images, detector.input_size, seed)
    tables = build_tables(detector, imgs, max_det, len(detector.output_details),
                          (input_dtypes, input_shape))
    suites = _suites(_import_gx(), max_det, n_classes, input_dtypes)

    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model)
    with staged_dir(out_dir) as staging:
        gx_results, rows = run_suites(tables, suites, staging / DOCS_DIR)
        success = all(r["success"] for r in rows)
        failed = [r["name"] for r in rows if not r["success"]]
        checked_against = {
            "num_classes": n_classes, "num_classes_source": classes_src,
            "max_detections": max_det, "postprocess_op": info["postprocess_op"],
            "output_rule": detector.output_rule,
            "input": {"name": detector.input_detail["name"], "dtype": detector.input_dtype.name,
                      "shape": [int(d) for d in detector.input_detail["shape"]]},
            "expected_input_dtype": input_dtypes, "expected_input_dtype_source": dtype_src,
            "expected_input_shape": input_shape, "expected_input_shape_source": shape_src,
            "box_margin": BOX_MARGIN,
        }
        document = {"success": success, "model": str(model), "images": len(imgs),
                    "image_source": image_source, "checked_against": checked_against,
                    "expectations": rows,
                    "gx_version": _import_gx().__version__,
                    "suite_results": [r.to_json_dict() for r in gx_results]}
        (staging / RESULT_FILE).write_text(json.dumps(document, indent=2, default=str))
    summary = {
        "success": success,
        "model": str(model),
        "images": len(imgs),
        "image_source": image_source,
        **checked_against,
        "expectations": rows,
        "failed": failed,
        "result_json": str(out_dir / RESULT_FILE),
        "data_docs": str(out_dir / DOCS_DIR / "index.html"),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if raise_on_failure and not success:
        raise failure_error(summary)
    return summary


def failure_error(summary: dict) -> ValidationFailed:
    broken = [r for r in summary["expectations"] if not r["success"]]
    text = "; ".join(f"{r['name']} ({r['details']})" for r in broken)
    return ValidationFailed(f"{len(broken)} output-contract expectation(s) failed: {text}.",
                            where=summary["model"],
                            fix=f"see {summary['result_json']} and {summary['data_docs']}; "
                                "convert the model again with the recipe's settings, or fix the "
                                "graph's post-process op.")
