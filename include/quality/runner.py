"""Running a detector .tflite: the one place that knows the model's input/output contract.

Input: one tensor `normalized_input_image_tensor` [1, S, S, 3]

* float32 models (float32, dynamic, float16 precisions) take the preprocessed image, float32 in
  [-1, 1] (`include.data.preprocess.preprocess`);
* integer-input models (int8, uint8 precisions) take uint8: the same preprocessed floats are
  quantised with the model's own input quantisation, q = round(x / scale + zero_point), clipped to
  the dtype's range.

Outputs: the four float32 tensors of the SSD post-process op (TFLite_Detection_PostProcess)

    boxes    [1, D, 4]  (ymin, xmin, ymax, xmax), normalised to the input image
    classes  [1, D]     0-based model class index (a whole number stored as float)
    scores   [1, D]     sorted best first
    num      [1]        how many of the D slots hold detections

How the outputs are told apart (`Detector.output_rule` records which rule applied):

1. "names": TFOD's names -- one output named `BASE` and three named `BASE:1`, `BASE:2`,
   `BASE:3` (BASE is `TFLite_Detection_PostProcess` in every converted TFOD/mobiledet model) are
   boxes, classes, scores, num. Names, never the order of `get_output_details()`, which is not
   guaranteed to follow the op's output order.
2. "shapes": otherwise, when there are exactly four outputs whose shapes are one [1, D, 4], two
   [1, D] and one [1], the [1, D, 4] one is the boxes and the [1] one the count; the
   two [1, D] ones are classes then scores in the model's output order (the post-process op's own
   order). This lets models built by other tools (or built to break the contract, in the tests)
   be run and checked.
3. anything else (a classifier, a raw SSD head without post-processing) raises
   ModelContractError naming the outputs found.

The dtypes of the outputs are not enforced here: `include.quality.validate` reports a non-float
output as a failed expectation instead of refusing to run the model.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from include.edgetpu.tflite_model import POSTPROCESS_CUSTOM_CODE as POSTPROCESS
from include.edgetpu.tflite_model import check_model_file, read_model
from include.errors import DataError, ModelContractError

INPUT_NAME = "normalized_input_image_tensor"
_SUFFIX_RE = re.compile(r"^(.*):([123])$")


def _shape(detail) -> tuple[int, ...]:
    return tuple(int(d) for d in detail["shape"])


def _describe(details) -> str:
    return ", ".join(f"{d['name']!r} {list(_shape(d))} {np.dtype(d['dtype']).name}"
                     for d in details) or "none"


def map_outputs(details, where: str = "model") -> tuple[dict[str, dict], str]:
    """{role: output detail} for the four post-process outputs, and the rule that matched.

    Raises ModelContractError when the outputs are not the post-process op's four.
    """
    details = list(details)
    expected = ("the four outputs of TFLite_Detection_PostProcess: boxes [1, D, 4], classes "
                "[1, D], scores [1, D], num_detections [1]")
    fix = ("convert a detector whose graph ends in the SSD post-process op (`mobiledet export` "
           "then `mobiledet convert`, or TFOD's export_tflite_ssd_graph with "
           "add_postprocessing_op=true).")
    if len(details) != 4:
        raise ModelContractError(f"the model has {len(details)} output(s) ({_describe(details)}); "
                                 f"expected {expected}.", where=where, fix=fix)
    # Rule 1: TFOD names BASE, BASE:1, BASE:2, BASE:3.
    by_suffix: dict[str, dict] = {}
    bases: dict[str, dict] = {}
    for d in details:
        m = _SUFFIX_RE.match(d["name"])
        if m:
            by_suffix[m.group(2)] = d
            bases.setdefault(m.group(1), d)
    plain = [d for d in details if not _SUFFIX_RE.match(d["name"])]
    if len(by_suffix) == 3 and len(plain) == 1 and len(bases) == 1 \
            and next(iter(bases)) == plain[0]["name"]:
        mapping = {"boxes": plain[0], "classes": by_suffix["1"], "scores": by_suffix["2"],
                   "num": by_suffix["3"]}
        rule = "names"
    else:
        # Rule 2: shapes, then output order for the two [1, D] tensors.
        shapes = [_shape(d) for d in details]
        boxes = [d for d, s in zip(details, shapes) if len(s) == 3 and s[0] == 1 and s[2] == 4]
        dets = _shape(boxes[0])[1] if len(boxes) == 1 else None
        vectors = [d for d, s in zip(details, shapes) if s == (1, dets)]
        counts = [d for d, s in zip(details, shapes) if s == (1,)]
        if len(boxes) != 1 or len(counts) != 1 or len(vectors) != 2:
            raise ModelContractError(f"the model's outputs are {_describe(details)}; expected "
                                     f"{expected}.", where=where, fix=fix)
        mapping = {"boxes": boxes[0], "classes": vectors[0], "scores": vectors[1],
                   "num": counts[0]}
        rule = "shapes"
    d_boxes = _shape(mapping["boxes"])
    if len(d_boxes) != 3 or d_boxes[0] != 1 or d_boxes[2] != 4:
        raise ModelContractError(f"output {mapping['boxes']['name']!r} (boxes) has shape "
                                 f"{list(d_boxes)}; expected [1, D, 4].", where=where, fix=fix)
    return mapping, rule


class Detector:
    """A detector .tflite in the LiteRT interpreter.

    `threads`: the interpreter's num_threads (None: the runtime's default). One Detector is not
    thread-safe; use one per thread (the interpreter releases the GIL while it runs, so several
    Detectors in threads run in parallel).
    """

    def __init__(self, model_path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.model_path = check_model_file(model_path)
        where = str(self.model_path)
        self.threads = threads
        try:
            self.interpreter = Interpreter(model_path=where, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelContractError(f"the LiteRT interpreter cannot load the model "
                                     f"({str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}).",
                                     where=where,
                                     fix="check that the file is a complete .tflite written by the "
                                         "TFLite converter and that its custom ops are "
                                         "TFLite_Detection_PostProcess only (Edge TPU-compiled "
                                         "models need the Edge TPU runtime).") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelContractError(f"the model has {len(inputs)} inputs ({_describe(inputs)}); "
                                     "expected one image input [1, S, S, 3].", where=where,
                                     fix="convert a single-input detector.")
        self.input_detail = inputs[0]
        shape = _shape(self.input_detail)
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2] \
                or shape[1] < 1:
            raise ModelContractError(f"the input {self.input_detail['name']!r} has shape "
                                     f"{list(shape)}; expected [1, S, S, 3].", where=where,
                                     fix="convert with a fixed square input shape "
                                         "(fixed_shape_resizer).")
        self.input_size = shape[1]
        self.input_dtype = np.dtype(self.input_detail["dtype"])
        if self.input_dtype not in (np.float32, np.uint8, np.int8):
            raise ModelContractError(f"the input {self.input_detail['name']!r} has dtype "
                                     f"{self.input_dtype.name}; expected float32 or uint8.",
                                     where=where, fix="convert with a float32 or uint8 input.")
        scale, zero_point = self.input_detail.get("quantization", (0.0, 0))
        self.input_quantization = ({"scale": float(scale), "zero_point": int(zero_point)}
                                   if scale else None)
        if self.input_dtype != np.float32 and self.input_quantization is None:
            raise ModelContractError(f"the {self.input_dtype.name} input has no quantisation "
                                     "parameters, so real values cannot be mapped onto it.",
                                     where=where, fix="convert with the int8/uint8 recipe.")
        self.output_details = self.interpreter.get_output_details()
        self.outputs, self.output_rule = map_outputs(self.output_details, where)
        self.max_detections = _shape(self.outputs["boxes"])[1]

    def __repr__(self) -> str:
        return (f"Detector({str(self.model_path)!r}, input {self.input_dtype.name} "
                f"[1, {self.input_size}, {self.input_size}, 3], D={self.max_detections}, "
                f"threads={self.threads})")

    # ------------------------------------------------------------------ input
    def prepare(self, float_image: np.ndarray) -> np.ndarray:
        """A preprocessed image (float32 [S, S, 3] or [1, S, S, 3] in [-1, 1]) -> the model input.

        Integer-input models get q = round(x / scale + zero_point), clipped to the dtype's range.
        """
        x = np.asarray(float_image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        s = self.input_size
        if x.shape != (1, s, s, 3):
            raise DataError(f"the preprocessed image has shape {list(x.shape)}; this model takes "
                            f"[{s}, {s}, 3].", where=str(self.model_path),
                            fix=f"preprocess the image with size {s} "
                                "(include.data.preprocess.preprocess(image, size)).")
        if self.input_dtype == np.float32:
            return x
        q = self.input_quantization
        info = np.iinfo(self.input_dtype)
        return np.clip(np.rint(x / q["scale"] + q["zero_point"]), info.min, info.max) \
            .astype(self.input_dtype)

    def preprocess(self, image) -> np.ndarray:
        """An image (uint8 array or path) -> float32 [S, S, 3] through the product's preprocess."""
        from include.data.preprocess import preprocess

        return preprocess(image, self.input_size)

    # ------------------------------------------------------------------ running
    def raw_outputs(self, float_image: np.ndarray) -> dict[str, np.ndarray]:
        """Run once; the four outputs exactly as the model returns them (batch dims, dtypes, slot
        order all untouched), keyed by role."""
        return self.run(self.prepare(float_image))

    def run(self, model_input: np.ndarray) -> dict[str, np.ndarray]:
        """`raw_outputs` for an input already made by `prepare` (lets a pipeline prepare inputs
        in other threads)."""
        interp = self.interpreter
        interp.set_tensor(self.input_detail["index"], model_input)
        interp.invoke()
        return {role: np.array(interp.get_tensor(d["index"])) for role, d in self.outputs.items()}

    def detect(self, float_image: np.ndarray) -> dict[str, np.ndarray]:
        """Run once; the valid detections, best first.

        boxes float32 [n, 4] (ymin, xmin, ymax, xmax) normalised, classes int64 [n] (0-based),
        scores float32 [n], num int (n <= D). Slots past num_detections are dropped; values are
        NOT clipped (the evaluation clips to the image).
        """
        raw = self.raw_outputs(float_image)
        return decode(raw, self.max_detections)


def decode(raw: dict[str, np.ndarray], max_detections: int) -> dict[str, np.ndarray]:
    """Raw post-process outputs -> the valid detections sorted best first (see Detector.detect)."""
    num_value = float(np.asarray(raw["num"]).reshape(-1)[0])
    n = int(num_value) if np.isfinite(num_value) else 0
    n = max(0, min(n, max_detections))
    boxes = np.asarray(raw["boxes"], dtype=np.float32).reshape(-1, 4)[:n]
    classes = np.asarray(raw["classes"], dtype=np.float32).reshape(-1)[:n]
    scores = np.asarray(raw["scores"], dtype=np.float32).reshape(-1)[:n]
    order = np.argsort(-scores, kind="stable")
    return {"boxes": boxes[order], "classes": np.rint(classes[order]).astype(np.int64),
            "scores": scores[order], "num": n}


def default_threads() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def model_info(model_path) -> dict:
    """What the model file says about its post-process op: num_classes, max_detections, and the
    op's options (None when the model has no readable TFLite_Detection_PostProcess op).

    Read by the project's one flatbuffer reader (`include.edgetpu.tflite_model`); nothing is
    run, so a model the interpreter cannot load still gets an answer.
    """
    none = {"postprocess_op": False, "num_classes": None, "max_detections": None, "options": {},
            "outputs": []}
    path = check_model_file(model_path)
    try:
        model = read_model(path)
    except Exception:  # an unreadable flatbuffer: the interpreter will say what is wrong
        return none
    op = next((op for op in model.ops if op.custom_code == POSTPROCESS), None)
    if op is None:
        return none
    opts = op.custom_options if isinstance(op.custom_options, dict) else {}
    return {"postprocess_op": True,
            "num_classes": int(opts["num_classes"]) if "num_classes" in opts else None,
            "max_detections": int(opts["max_detections"]) if "max_detections" in opts else None,
            "options": {k: v for k, v in opts.items() if isinstance(v, (int, float, bool, str))},
            "outputs": [t.name for t in op.outputs]}


def read_conversion_json(model_path) -> dict | None:
    """The model's conversion report, or None when there is none; DataError when unreadable."""
    import json

    from include.convert.recipes import conversion_json_path

    path = conversion_json_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the conversion report next to the model cannot be read ({exc}).",
                        where=str(path), fix="convert the model again, or remove the broken "
                                             "report.") from None
    return data if isinstance(data, dict) else None


def find_label_map(obj, depth: int = 0) -> dict[int, dict] | None:
    """The first `label_map` ({class index: {"name", "category_id"}}) found in a report dict
    (conversion.json embeds the export's); None when there is none."""
    if depth > 6 or not isinstance(obj, dict):
        return None
    lm = obj.get("label_map")
    if isinstance(lm, dict) and lm:
        out = {}
        try:
            for k, v in lm.items():
                if isinstance(v, dict):
                    out[int(k)] = {"name": str(v.get("name", f"class {k}")),
                                   "category_id": v.get("category_id")}
                else:
                    out[int(k)] = {"name": str(v), "category_id": None}
            return out
        except (TypeError, ValueError):
            pass
    for v in obj.values():
        found = find_label_map(v, depth + 1) if isinstance(v, dict) else None
        if found:
            return found
    return None


def find_precision(report: dict | None) -> str | None:
    if isinstance(report, dict) and isinstance(report.get("precision"), str):
        return report["precision"]
    return None


def names_from_json(path: Path) -> dict[int, dict]:
    """{class: {name, category_id}} of a JSON label map (a conversion report, an export.json,
    {"0": "person", ...}); {} for a COCO annotation file (a dataset, not a label map)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the label file cannot be read as JSON ({exc}).", where=str(path),
                        fix="pass a COCO dataset, a conversion report, a JSON label map "
                            "{\"0\": \"name\", ...}, a label_map.pbtxt or a labels.txt.") \
            from None
    if isinstance(data, dict) and all(k in data for k in ("images", "annotations",
                                                          "categories")):
        return {}  # a COCO annotation file: handled by the dataset path
    found = find_label_map(data if isinstance(data, dict) else {})
    if found is None and isinstance(data, dict):
        found = find_label_map({"label_map": data})
    if not found:
        raise DataError("no label map found in the file.", where=str(path),
                        fix="pass a COCO dataset, a conversion report (with the checkpoint's "
                            "label_map) or a JSON map {\"0\": \"person\", ...}.")
    return found
