"""The conversion: an export folder or TFOD bundle -> one .tflite per recipe of the table
(`include.convert.recipes`), loaded and run once in the LiteRT interpreter, with conversion.json
(the recipe, the inputs and outputs, the warnings) beside it.

See `include.convert.recipes` for the table, the int8 options and the integer promise.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from pathlib import Path

from include.atomic import copy_atomic, move_atomic, write_json_atomic
from include.convert.fast_calibration import CALIBRATORS
from include.convert.fast_calibration import fast_calibration as litert_calibration
from include.convert.graph_rewrite import rewrite_for, rewrite_graph
from include.convert.recipes import (ACCELERATOR_VARIANTS, RECIPES, Recipe, apply_recipe,
                                     check_options, check_request, conversion_json_path,
                                     frozen_graph_converter, strip_fake_quant)
from include.errors import ConversionError


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
            output_type: str | None = None, seed: int = 0, options: dict | None = None,
            recipe: Recipe | None = None, session=None, extra_report: dict | None = None,
            fast_calibration: bool = True) -> dict:
    """Convert an export folder or TFOD bundle with one recipe; writes out_path and
    conversion.json next to it (both appear only when complete). Returns the report.

    options: int8 recipe options (module docstring). recipe: use this Recipe instead of the
    table's (e.g. WRITEUP_CPU_INT8). session: a calibrated `quant_debug.DebugSession` of the
    same graph and calibration, reused by float fallback (the recipe search passes it).
    extra_report: more keys for conversion.json (the search adds its table).
    fast_calibration: calibrate in the LiteRT interpreter with XNNPACK instead of TensorFlow's
    calibrator (`include.convert.fast_calibration`; same ranges, a fraction of the time).
    """
    import tensorflow as tf

    from include.convert.inspect import inspect_tflite
    from include.convert.source import open_graph
    from include.mobiledet.export import load_frozen_graph

    source = session.source if session is not None else open_graph(graph_dir)
    recipe = recipe or RECIPES.get(precision)
    has_calibration = calibration is not None or session is not None
    check_request(precision, source.qat, output_type, has_calibration, recipe)
    options = check_options(precision, options, source.spec.variant)
    fallback = "float_layers" in options or "float_worst" in options
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    warn = []
    if source.spec.variant in ACCELERATOR_VARIANTS and precision in ("dynamic", "float16"):
        warn.append(f"{precision} keeps float activations: the {source.spec.variant} accelerator "
                    "runs only full-integer models, so this model will run on the CPU.")

    calib_batch, calib_info = None, None
    if session is not None:
        calib_batch, calib_info = session.calibration, session.calibration_info
    elif recipe.settings.get("representative_dataset"):
        from include.convert.calibration import representative_images
        calib_batch, calib_info = representative_images(calibration, source.spec.input_size,
                                                        calibration_count, seed)
    started = time.perf_counter()
    fallback_info = None
    with tempfile.TemporaryDirectory(prefix="mobiledet-convert-") as tmp:
        graph_path = source.graph_path
        stripped = 0
        if source.qat and recipe.source == "float":
            graph_def, stripped = strip_fake_quant(load_frozen_graph(source.graph_path))
            graph_path = Path(tmp) / "float_graph.pb"
            graph_path.write_bytes(graph_def.SerializeToString())
        graph_rewrite = None
        if not fallback and rewrite_for(precision, recipe.source, source.spec.variant):
            graph_def, graph_rewrite = rewrite_graph(load_frozen_graph(graph_path))
            graph_path = Path(tmp) / "rewritten_graph.pb"
            graph_path.write_bytes(graph_def.SerializeToString())
        if fallback:
            from include.convert.quant_debug import open_session
            if session is None or session.per_tensor != bool(options.get("per_tensor")):
                session = open_session(graph_dir, None, calibration_batch=calib_batch,
                                       calibration_info=calib_info,
                                       per_tensor=bool(options.get("per_tensor")))
            layers = session.resolve(options.get("float_layers"), options.get("float_worst", 0))
            data = session.quantize(layers)
            fallback_info = {"float_layers": [{k: l[k] for k in ("name", "where", "op", "tensor",
                                                                 "channel_error", "rmse_scaled")}
                                              for l in layers],
                             "requested": {"patterns": options.get("float_layers", []),
                                           "worst": options.get("float_worst", 0)},
                             "mechanism": "tf.lite.experimental.QuantizationDebugger, "
                                          "QuantizationDebugOptions(denylisted_nodes=...), "
                                          "get_nondebug_quantized_model()"}
        else:
            conv = frozen_graph_converter(graph_path, source)
            apply_recipe(conv, recipe, source.input_name, calib_batch, options)
            fast = bool(fast_calibration and recipe.calibrated
                        and options.get("activations") != "int16")
            if calib_info is not None:
                calib_info = {**calib_info, "calibrator": CALIBRATORS[fast]}
            try:
                with warnings.catch_warnings(), litert_calibration(fast):
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
        check_integer_promise(precision, recipe, options, contents, source, fallback_info)
        if fallback_info is not None:
            fallback_info["float_ops"] = _float_ops(tmp_model)
            fallback_info["input_dtype"] = contents["inputs"][0]["dtype"]
            fallback_info["edgetpu"] = edgetpu_cost(tmp_model)
        settings = {"allow_custom_ops": True, **recipe.settings,
                    "input_arrays": [source.input_name],
                    "output_arrays": list(source.output_names),
                    "input_shapes": {source.input_name: list(source.input_shape)}}
        if options.get("per_tensor"):
            settings["_experimental_disable_per_channel"] = True
        if options.get("activations") == "int16":
            settings["target_spec.supported_ops"] = [
                "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8", "TFLITE_BUILTINS"]
            settings.pop("inference_input_type", None)
        report = {
            "precision": precision,
            "recipe": {"description": _describe(recipe, options),
                       "source_graph": recipe.source,
                       "converter": "tf.compat.v1.lite.TFLiteConverter.from_frozen_graph",
                       "settings": settings,
                       "options": options,
                       "fake_quant_nodes_bypassed": stripped,
                       "postprocess_inputs_rewrite": rewrite,
                       "graph_rewrite": graph_rewrite},
            "source": source.to_dict(),
            "calibration": calib_info,
            "tensorflow_version": tf.__version__,
            "seconds": round(seconds, 3),
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            **contents,
            "warnings": warn,
        }
        if fallback_info is not None:
            report["fallback"] = fallback_info
        report.update(extra_report or {})
        publish_model(tmp_model, out_path, report, move=True)
    return report


def publish_model(model, out_path, report: dict, *, move: bool = False) -> Path:
    """Put a model under its final name with its conversion.json beside it, each complete or
    absent: the report first, the model last, so a model under its final name always has its
    own provenance beside it (after a crash, at worst a new report beside the old model).
    `move` renames `model` into place (copying across file systems), else it is copied."""
    out_path = Path(out_path)
    write_json_atomic(conversion_json_path(out_path), report)
    return move_atomic(model, out_path) if move else copy_atomic(model, out_path)


def _describe(recipe: Recipe, options: dict) -> str:
    text = recipe.description
    if options.get("per_tensor"):
        text += "; per-tensor weights"
    if options.get("activations") == "int16":
        text = ("16x8: int16 activations, int8 weights, from post-training calibration, "
                "float input, float outputs")
    if "float_layers" in options or "float_worst" in options:
        parts = []
        if options.get("float_worst"):
            parts.append(f"the {options['float_worst']} worst layer(s)")
        if options.get("float_layers"):
            parts.append("layers " + ", ".join(options["float_layers"]))
        text += "; float fallback of " + " and ".join(parts)
    return text


def _float_ops(model_path) -> list[dict]:
    """Ops of a model that compute in float (a float output), in execution order, read from
    the flatbuffer (the interpreter hides ops that a delegate took)."""
    from include.convert.quant_debug import describe_tensor
    from include.edgetpu.tflite_model import read_model

    out = []
    for op in read_model(model_path).ops:
        if op.opcode in ("DEQUANTIZE", "QUANTIZE") or op.custom_code:
            continue
        if any(t.dtype in ("float32", "float16") for t in op.outputs):
            name = op.outputs[0].name if op.outputs else ""
            out.append({"op": op.opcode, "layer": describe_tensor(name)[0]})
    return out


def edgetpu_cost(model_path) -> dict:
    """What a model costs on the Edge TPU (offline prediction): ops mapped and where the one cut
    falls (`include/edgetpu/analyze.py`)."""
    from include.edgetpu.analyze import analyze_model

    result = analyze_model(model_path)
    first = result.get("first_unmapped_op")
    cut = None
    if first:
        cut = {"operator": first["operator"], "output": first.get("output"),
               "layer": _cut_layer(model_path, first["index"]),
               "reason": (first.get("reasons") or [None])[0]}
    return {"prediction": True, "ops_on_tpu": result["ops_on_tpu"],
            "total_ops": result["total_ops"], "ops_on_cpu": result["ops_on_cpu"],
            "unexpected_on_cpu": result["unexpected_on_cpu"],
            "all_mapped_except_postprocess": result["all_mapped_except_postprocess"],
            "cut": cut}


def _cut_layer(model_path, op_index: int) -> str | None:
    """The model layer at the cut: the op's own output, or for a (de)quantize in front of a
    float layer, the layer it feeds."""
    from include.convert.quant_debug import describe_tensor
    from include.edgetpu.tflite_model import read_model

    ops = read_model(model_path).ops
    op = next((o for o in ops if o.index == op_index), None)
    seen = 0
    while op is not None and op.opcode in ("DEQUANTIZE", "QUANTIZE") and seen < 4:
        outs = {t.index for t in op.outputs}
        op = next((o for o in ops if outs & {t.index for t in o.inputs if t is not None}), None)
        seen += 1
    if op is None or not op.outputs:
        return None
    return describe_tensor(op.outputs[0].name or "")[0]


def check_integer_promise(precision: str, recipe: Recipe, options: dict, contents: dict,
                          source, fallback_info: dict | None) -> None:
    """Refuse an integer recipe whose model came out with float tensors (module docstring)."""
    if precision not in ("int8", "uint8"):
        return
    dtypes = contents["tensor_dtypes"]
    input_dtype = contents["inputs"][0]["dtype"]
    floats = contents["float_tensors_besides_io"]
    if options.get("activations") == "int16":
        if dtypes.get("int16", 0) == 0:
            problem = "no int16 activation tensor"
        else:
            return
    elif fallback_info is not None:
        if dtypes.get("int8", 0) + dtypes.get("uint8", 0) == 0:
            problem = "no 8-bit tensor at all"
        else:
            return
    else:
        if input_dtype == "uint8" and not floats:
            return
        problem = (f"a {input_dtype} input and {len(floats)} float tensor(s) inside the model "
                   f"(e.g. {', '.join(floats[:2]) or '-'})")
        if dtypes.get("int8", 0) and input_dtype == "float32":
            problem += "; that is a dynamic-range model (int8 weights, float activations)"
    if precision == "uint8" or recipe.source == "qat":
        works = ("uint8 needs a quantization-aware-trained graph whose FakeQuant nodes cover "
                 "every op; for a float graph use --precision int8 with --calibration DIR "
                 "(post-training calibration with representative data)")
    else:
        works = ("use the int8 recipe of this project: --precision int8 with --calibration DIR "
                 "(optimizations=[DEFAULT] plus representative data, uint8 input), not "
                 "quantized_input_stats without representative data")
    raise ConversionError(
        f"the {precision} recipe ({recipe.description}) promised a full-integer model, but "
        f"TensorFlow {_tf_version()}'s converter returned {problem}. The converter does not "
        "refuse such a recipe; it silently keeps float tensors.",
        where=str(source.graph_path), fix=works + ".")


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


