"""The conversion recipes: one table, one function.

Every model goes through TensorFlow's own converter
(`tf.compat.v1.lite.TFLiteConverter.from_frozen_graph`, `allow_custom_ops` for the SSD
post-process op) and is loaded and run once in the LiteRT interpreter before it is reported.

| precision | source graph | converter settings |
| float32   | float        | none (the accuracy reference)                                   |
| dynamic   | float        | optimizations=[DEFAULT]                                         |
| float16   | float        | optimizations=[DEFAULT], supported_types=[float16]              |
| int8      | float        | optimizations=[DEFAULT], representative data, uint8 input       |
| uint8     | QAT          | inference_type=uint8, uint8 input, quantized_input_stats 128/128 |

The post-process op has float outputs only, so every model's outputs are float32. For int8,
`postprocess_inputs.integer_postprocess_inputs` then feeds the op uint8 instead of the
converter's dequantised floats, so no float tensor is left before the op.
Float recipes on a QAT graph bypass its fake-quant nodes, giving the float reference of the
same weights.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from include.errors import ConversionError

QUANTIZED_INPUT_STATS = (128.0, 128.0)  # uint8 q -> real (q - 128) / 128 in [-1, 127/128]
ACCELERATOR_VARIANTS = ("edgetpu", "dsp")


@dataclass(frozen=True)
class Recipe:
    precision: str
    source: str                   # "float" or "qat"
    settings: dict = field(default_factory=dict)
    description: str = ""


RECIPES = {
    "float32": Recipe("float32", "float", {"optimizations": []},
                      "float32 reference, no optimisation"),
    "dynamic": Recipe("dynamic", "float", {"optimizations": ["DEFAULT"]},
                      "dynamic range: int8 weights, float activations"),
    "float16": Recipe("float16", "float", {"optimizations": ["DEFAULT"],
                                           "target_spec.supported_types": ["float16"]},
                      "float16 weights"),
    "int8": Recipe("int8", "float", {"optimizations": ["DEFAULT"], "representative_dataset": True,
                                     "inference_input_type": "uint8",
                                     "inference_output_type": "float32"},
                   "full integer from post-training calibration, uint8 input, float outputs"),
    "uint8": Recipe("uint8", "qat", {"optimizations": [], "inference_type": "uint8",
                                     "inference_input_type": "uint8",
                                     "quantized_input_stats": list(QUANTIZED_INPUT_STATS)},
                    "uint8 from a quantization-aware-trained graph, input stats (128, 128)"),
}
PRECISIONS = tuple(RECIPES)


def check_request(precision: str, qat_graph: bool, output_type: str | None, has_calibration: bool):
    """Raise ConversionError for requests that cannot work, before the converter runs."""
    if precision not in RECIPES:
        raise ConversionError(f"unknown precision {precision!r}; allowed values: "
                              f"{', '.join(PRECISIONS)}.", where="--precision",
                              fix="pick one of the allowed precisions.")
    if output_type not in (None, "float32"):
        raise ConversionError(
            f"an integer output type ({output_type}) cannot be produced: the model ends in the SSD "
            "post-process op (TFLite_Detection_PostProcess), which only has float32 outputs "
            "(boxes, classes, scores, count). The converter would stop with 'Unsupported output "
            "type' for that op.", where="--output-type",
            fix="leave the output type at float32; the body of the model is still fully integer "
                "and the input is uint8 for the int8 and uint8 precisions.")
    recipe = RECIPES[precision]
    if recipe.source == "qat" and not qat_graph:
        raise ConversionError(
            "the uint8 recipe needs a quantization-aware-trained graph (with FakeQuant nodes that "
            "carry the activation ranges), but this graph has none.", where="--precision uint8",
            fix="use --precision int8 (post-training calibration) for a float graph, or export a "
                "checkpoint trained with `mobiledet train --qat`.")
    if precision == "int8" and qat_graph:
        raise ConversionError(
            "the int8 recipe calibrates a float graph, but this graph is quantization-aware "
            "trained (it has FakeQuant nodes).", where="--precision int8",
            fix="use --precision uint8 for QAT graphs.")
    if precision == "int8" and not has_calibration:
        raise ConversionError(
            "the int8 recipe needs representative data to calibrate activation ranges.",
            where="--calibration", fix="pass --calibration DIR (a COCO dataset or an image "
                                       "folder); 100 images is the default sample.")


def strip_fake_quant(graph_def):
    """Copy of the graph with every FakeQuantWithMinMaxVars* node replaced by an Identity."""
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    stripped = 0
    for node in out.node:
        if node.op.startswith("FakeQuantWithMinMaxVars"):
            data_input = node.input[0]
            dtype = node.attr["T"].type if "T" in node.attr else None
            node.op = "Identity"
            del node.input[:]
            node.input.append(data_input)
            for key in list(node.attr):
                del node.attr[key]
            node.attr["T"].type = dtype or tf.float32.as_datatype_enum
            stripped += 1
    return out, stripped


def _converter(graph_path, source):
    import tensorflow as tf

    conv = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(graph_path), [source.input_name], list(source.output_names),
        input_shapes={source.input_name: list(source.input_shape)})
    conv.allow_custom_ops = True
    return conv


def _apply_recipe(conv, recipe: Recipe, input_name: str, calibration):
    import tensorflow as tf

    s = recipe.settings
    if "DEFAULT" in s.get("optimizations", []):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if "target_spec.supported_types" in s:
        conv.target_spec.supported_types = [tf.float16]
    if s.get("representative_dataset"):
        def gen():
            for i in range(calibration.shape[0]):
                yield [calibration[i:i + 1]]
        conv.representative_dataset = gen
    if s.get("inference_type") == "uint8":
        conv.inference_type = tf.uint8
    if s.get("inference_input_type") == "uint8":
        conv.inference_input_type = tf.uint8
    if "quantized_input_stats" in s:
        conv.quantized_input_stats = {input_name: tuple(s["quantized_input_stats"])}


def smoke_run(model_path) -> dict:
    """Load and run once; the four post-process outputs must come back as float32."""
    import numpy as np

    from include.convert.inspect import load_interpreter

    interp = load_interpreter(model_path)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()
    outs = interp.get_output_details()
    bad = [(o["name"], np.dtype(o["dtype"]).name) for o in outs if o["dtype"] != np.float32]
    if len(outs) != 4 or bad:
        raise ConversionError(f"the converted model has outputs {[(o['name'], np.dtype(o['dtype']).name) for o in outs]}; "
                              "expected the four float32 outputs of TFLite_Detection_PostProcess.",
                              where=str(model_path), fix="check the graph's post-process node.")
    return {"outputs": [o["name"] for o in outs]}


def convert(graph_dir, precision: str, out_path, *, calibration=None, calibration_count: int = 100,
            output_type: str | None = None, seed: int = 0) -> dict:
    """Convert an export folder or TFOD bundle with one recipe; writes out_path and
    conversion.json next to it (both appear only when complete). Returns the report."""
    import tensorflow as tf

    from include.convert.inspect import inspect_tflite
    from include.convert.source import open_graph
    from include.mobiledet.export import load_frozen_graph

    source = open_graph(graph_dir)
    check_request(precision, source.qat, output_type, calibration is not None)
    recipe = RECIPES[precision]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    warn = []
    if source.spec.variant in ACCELERATOR_VARIANTS and precision in ("dynamic", "float16"):
        warn.append(f"{precision} keeps float activations: the {source.spec.variant} accelerator "
                    "runs only full-integer models, so this model will run on the CPU.")

    calib_batch, calib_info = None, None
    if recipe.settings.get("representative_dataset"):
        from include.convert.calibration import representative_images
        calib_batch, calib_info = representative_images(calibration, source.spec.input_size,
                                                        calibration_count, seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobiledet-convert-") as tmp:
        graph_path = source.graph_path
        stripped = 0
        if source.qat and recipe.source == "float":
            graph_def, stripped = strip_fake_quant(load_frozen_graph(source.graph_path))
            graph_path = Path(tmp) / "float_graph.pb"
            graph_path.write_bytes(graph_def.SerializeToString())
        conv = _converter(graph_path, source)
        _apply_recipe(conv, recipe, source.input_name, calib_batch)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = conv.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            lines = [l for l in str(exc).splitlines() if l.strip()]
            raise ConversionError(f"TensorFlow's converter failed for the {precision} recipe: "
                                  f"{' | '.join(lines[-3:])}", where=str(source.graph_path),
                                  fix="check that the graph is a TFLite-ready export.") from None
        rewrite = None
        if precision == "int8":
            from include.convert.postprocess_inputs import integer_postprocess_inputs
            data, rewrite = integer_postprocess_inputs(data)
        seconds = time.perf_counter() - started
        tmp_model = Path(tmp) / "model.tflite"
        tmp_model.write_bytes(data)
        smoke_run(tmp_model)
        contents = inspect_tflite(tmp_model)
        report = {
            "precision": precision,
            "recipe": {"description": recipe.description, "source_graph": recipe.source,
                       "converter": "tf.compat.v1.lite.TFLiteConverter.from_frozen_graph",
                       "settings": {"allow_custom_ops": True, **recipe.settings,
                                    "input_arrays": [source.input_name],
                                    "output_arrays": list(source.output_names),
                                    "input_shapes": {source.input_name: list(source.input_shape)}},
                       "fake_quant_nodes_bypassed": stripped,
                       "postprocess_inputs_rewrite": rewrite},
            "source": source.to_dict(),
            "calibration": calib_info,
            "tensorflow_version": tf.__version__,
            "seconds": round(seconds, 3),
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            **contents,
            "warnings": warn,
        }
        from include.console import dumps
        tmp_json = out_path.parent / f".{out_path.name}.conversion.json.partial"
        tmp_json.write_text(dumps(report))
        os.replace(tmp_model, out_path) if tmp_model.stat().st_dev == out_path.parent.stat().st_dev \
            else _copy_replace(tmp_model, out_path)
        os.replace(tmp_json, conversion_json_path(out_path))
    return report


def conversion_json_path(model_path) -> Path:
    model_path = Path(model_path)
    return model_path.parent / "conversion.json" if model_path.name == "model.tflite" \
        else model_path.with_suffix(".conversion.json")


def _copy_replace(src: Path, dst: Path):
    import shutil

    partial = dst.parent / f".{dst.name}.partial"
    shutil.copyfile(src, partial)
    os.replace(partial, dst)
