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

Options of the int8 recipe (`convert(..., options=...)`, also used by the recipe search in
`include/convert/search.py`):

| option | effect |
| per_tensor: true | one weight scale per tensor instead of per output channel
|                  | (converter `_experimental_disable_per_channel`) |
| activations: int16 | 16x8: int16 activations, int8 weights
|                    | (`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`), float input;
|                    | CPU only, accelerators run 8-bit models only |
| float_layers: [pattern, ...], float_worst: N | keep these layers (names as `mobiledet
|                    | quant-debug` prints them, fnmatch patterns) and the N worst of its ranking
|                    | float: TensorFlow's QuantizationDebugger denylists them
|                    | (`include/convert/quant_debug.py`) |

CPU int8 (`include/convert/graph_rewrite.py`): before the cpu variant's int8 conversion the
frozen graph's hard-swish is rewritten as x * relu6(x + 3) with the 1/6 folded into the next
convolutions' filters, and squeeze-and-excite's global AvgPool as Mean, so XNNPACK runs the
int8 model whole (int8 HARD_SWISH and AVERAGE_POOL_2D are not XNNPACK ops); conversion.json's
`recipe.graph_rewrite` counts what was rewritten. Float recipes and the float-fallback options
(which go through TensorFlow's QuantizationDebugger) convert the graph as exported. Calibration
runs in the LiteRT interpreter with XNNPACK (`include/convert/fast_calibration.py`; the
16x8 option keeps TensorFlow's calibrator); `calibration.calibrator` names the one used.

Integer promise. After conversion, an int8 or uint8 model must have a uint8 input and integer
tensors up to the post-process op (a 16x8 model: int16 activations; a fallback model: float
only in its named layers). TensorFlow 2.21 does not always refuse a recipe it cannot honour: the
MobileDet write-up's CPU int8 recipe (`WRITEUP_CPU_INT8`: quantized_input_stats without
representative data) silently gives a dynamic-range model with a float input. Such a model is
refused with a message that says what came out and which recipe works.

The table here is the one source of facts about precisions (what a recipe converts from, its
converter settings, whether it is integer, whether it calibrates, the gate's default allowed
drop, the default matrix per variant); `include.config` and the pipeline read them from here.
The conversion itself is `include.convert.converter.convert`. Nothing heavy is imported here:
TensorFlow loads inside `frozen_graph_converter` / `apply_recipe`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from include.errors import ConfigError, ConversionError
from include.mobiledet.spec import VARIANTS

QUANTIZED_INPUT_STATS = (128.0, 128.0)  # uint8 q -> real (q - 128) / 128 in [-1, 127/128]
ACCELERATOR_VARIANTS = ("edgetpu", "dsp")   # run full-integer models only


@dataclass(frozen=True)
class Recipe:
    precision: str
    source: str                   # "float" or "qat"
    settings: dict = field(default_factory=dict)
    description: str = ""
    max_map_drop: float = 0.05    # the gate's default allowed drop against float32

    @property
    def integer(self) -> bool:
        """A full-integer model (integer tensors up to the post-process op, uint8 input)."""
        return self.precision in ("int8", "uint8")

    @property
    def calibrated(self) -> bool:
        """Calibrates activation ranges on representative data (the long conversion)."""
        return bool(self.settings.get("representative_dataset"))


RECIPES = {
    "float32": Recipe("float32", "float", {"optimizations": []},
                      "float32 reference, no optimisation", max_map_drop=0.0),
    "dynamic": Recipe("dynamic", "float", {"optimizations": ["DEFAULT"]},
                      "dynamic range: int8 weights, float activations", max_map_drop=0.02),
    "float16": Recipe("float16", "float", {"optimizations": ["DEFAULT"],
                                           "target_spec.supported_types": ["float16"]},
                      "float16 weights", max_map_drop=0.01),
    "int8": Recipe("int8", "float", {"optimizations": ["DEFAULT"], "representative_dataset": True,
                                     "inference_input_type": "uint8",
                                     "inference_output_type": "float32"},
                   "full integer from post-training calibration, uint8 input, float outputs",
                   max_map_drop=0.05),
    "uint8": Recipe("uint8", "qat", {"optimizations": [], "inference_type": "uint8",
                                     "inference_input_type": "uint8",
                                     "quantized_input_stats": list(QUANTIZED_INPUT_STATS)},
                    "uint8 from a quantization-aware-trained graph, input stats (128, 128)",
                    max_map_drop=0.05),
}
PRECISIONS = tuple(RECIPES)
#: the gate's default allowed absolute drop of its metric against the float32 reference
DEFAULT_MAX_MAP_DROP = {p: r.max_map_drop for p, r in RECIPES.items()}
#: the precisions converted by default, per variant and checkpoint kind
DEFAULT_MATRIX = {
    "float": {"cpu": ("float32", "dynamic", "float16", "int8"), "edgetpu": ("float32", "int8"),
              "dsp": ("float32", "int8"), "gpu": ("float32", "float16")},
    "qat": {variant: ("float32", "uint8") for variant in VARIANTS},
}

# The CPU int8 recipe the MobileDet conversion write-up found by trial and error. With
# TensorFlow 2.21 it yields a dynamic-range model with a float input; `convert` refuses it.
WRITEUP_CPU_INT8 = Recipe("int8", "float", {"optimizations": ["DEFAULT"],
                                            "inference_input_type": "uint8",
                                            "quantized_input_stats": list(QUANTIZED_INPUT_STATS)},
                          "int8 as in the MobileDet write-up: quantized_input_stats (128, 128), "
                          "no representative data")
INT8_OPTIONS = ("per_tensor", "activations", "float_layers", "float_worst")
ACTIVATION_TYPES = ("int8", "int16")


def check_options(precision: str, options: dict | None, variant: str | None = None) -> dict:
    """Validate the int8 recipe options (module docstring) -> a normalised copy."""
    if not options:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"recipe options must be a mapping, got {type(options).__name__}.",
                          where="options", fix=f"use keys among {', '.join(INT8_OPTIONS)}.")
    unknown = sorted(set(options) - set(INT8_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown recipe option(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(INT8_OPTIONS)}.", where="options",
                          fix="drop the unknown keys.")
    out = {k: v for k, v in options.items() if v not in (None, False, [], 0)}
    if out and precision != "int8":
        raise ConversionError(f"the recipe options {', '.join(sorted(out))} apply to the int8 "
                              f"recipe only, not to {precision}.", where="--precision",
                              fix="use --precision int8, or drop the options.")
    act = out.get("activations", "int8")
    if act not in ACTIVATION_TYPES:
        raise ConfigError(f"unknown activation type {act!r}; allowed: "
                          f"{', '.join(ACTIVATION_TYPES)}.", where="--activations",
                          fix="int8 (default) or int16 (16x8, CPU only).")
    if act == "int8":
        out.pop("activations", None)
    elif variant in ACCELERATOR_VARIANTS:
        raise ConversionError(f"int16 activations (16x8) cannot run on the {variant} "
                              "accelerator, which runs 8-bit models only.", where="--activations",
                              fix="use int16 activations for the cpu or gpu variant only.")
    if "float_layers" in out:
        layers = out["float_layers"]
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not all(isinstance(p, str) and p.strip()
                                                             for p in layers):
            raise ConfigError(f"float_layers must be a list of layer names or patterns, got "
                              f"{layers!r}.", where="--float-layers",
                              fix="e.g. --float-layers 'edgetpu/C1/*'.")
        out["float_layers"] = [p.strip() for p in layers]
    if "float_worst" in out:
        n = out["float_worst"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"float_worst must be a whole number >= 0, got {n!r}.",
                              where="--float-worst", fix="use e.g. 1, 2 or 4.")
    if ("float_layers" in out or "float_worst" in out) and "activations" in out:
        raise ConversionError("float fallback and int16 activations cannot be combined.",
                              where="options", fix="pick one of them.")
    return out


def check_request(precision: str, qat_graph: bool, output_type: str | None, has_calibration: bool,
                  recipe: "Recipe | None" = None):
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
    recipe = recipe or RECIPES[precision]
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
    needs_data = recipe.settings.get("representative_dataset")
    if precision == "int8" and needs_data and not has_calibration:
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


def frozen_graph_converter(graph_path, source):
    """TensorFlow's own frozen-graph converter for a TFLite-ready graph (`source`: its
    input, outputs and shape), with custom ops allowed for the SSD post-process op."""
    import tensorflow as tf

    conv = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(graph_path), [source.input_name], list(source.output_names),
        input_shapes={source.input_name: list(source.input_shape)})
    conv.allow_custom_ops = True
    return conv


def apply_recipe(conv, recipe: Recipe, input_name: str, calibration, options: dict | None = None):
    """Set `recipe` (and the int8 options) on a converter; `calibration` is the representative
    batch of a calibrated recipe."""
    import tensorflow as tf

    s = recipe.settings
    options = options or {}
    if options.get("per_tensor"):
        conv._experimental_disable_per_channel = True
    if options.get("activations") == "int16":
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]
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
    if s.get("inference_input_type") == "uint8" and options.get("activations") != "int16":
        conv.inference_input_type = tf.uint8
    if "quantized_input_stats" in s:
        conv.quantized_input_stats = {input_name: tuple(s["quantized_input_stats"])}


def _report_name(model_name: str) -> str:
    return "conversion.json" if model_name == "model.tflite" \
        else PurePosixPath(model_name).with_suffix(".conversion.json").name


def conversion_json_path(model_path) -> Path:
    """Where `convert` writes a model's report (and every reader looks for it): conversion.json
    beside model.tflite, else <stem>.conversion.json."""
    model_path = Path(model_path)
    return model_path.parent / _report_name(model_path.name)


def conversion_json_uri(model_uri: str) -> str:
    """conversion_json_path for a store URI (or a path given as text)."""
    parent, sep, name = str(model_uri).rstrip("/").rpartition("/")
    return parent + sep + _report_name(name)
