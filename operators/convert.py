"""TFLiteConvertOperator: an export folder or TFOD bundle -> one .tflite model in the store.

    convert = TFLiteConvertOperator(
        task_id="convert",
        graph="s3://models/exports/edgetpu-float",    # tflite_graph.pb (+ pipeline.config)
        precision="int8",                             # float32 | dynamic | float16 | int8 | uint8
        calibration="s3://data/coco_val_subset",      # int8: a COCO dataset or image folder
        output="s3://models/tflite/{{ ds }}/model.tflite",
        conn_id="aws_default",
    )

It calls `include.pipeline.steps.convert.convert_model` (the one implementation the pipeline's
own convert task uses), which applies the precision's recipe of
`include.convert.recipes` and writes conversion.json (the recipe, the inputs and outputs, the
warnings) next to the model. The XCom is a small dict: model_uri, conversion_uri, size_bytes,
sha256, input, warnings, precision.
"""
from __future__ import annotations

from typing import Any

from include.convert.recipes import PRECISIONS  # light: no TensorFlow at import
from operators.base import (MobiledetOperator, bad_argument, check_choice, check_count,
                            check_location, is_static)
from operators.lineage import LineageMixin


class TFLiteConvertOperator(LineageMixin, MobiledetOperator):
    """Convert a TFLite-ready frozen graph with one precision recipe.

    :param graph: export folder (``mobiledet export``) or TFOD bundle (``pipeline.config`` +
        ``tflite_graph.pb``): a local path or a store URI. Templated.
    :param precision: float32, dynamic, float16, int8 (post-training calibration of a float
        graph) or uint8 (a quantization-aware-trained graph). Templated.
    :param output: where model.tflite goes (a local path or store URI ending in .tflite);
        conversion.json is written next to it. Templated.
    :param calibration: int8 only: a COCO dataset or an image folder (path or URI). Templated.
    :param calibration_count: how many calibration images are sampled (and downloaded).
    :param options: int8 recipe options (per_tensor, activations, float_layers, float_worst).
    :param conn_id: Airflow connection of s3:// locations (default aws_default).
    """

    template_fields = ("graph", "precision", "output_uri", "calibration", "conn_id")
    ui_color = "#fde8e8"

    def __init__(self, *, graph: str | None = None, precision: str | None = None,
                 output: str | None = None, calibration: str | None = None,
                 calibration_count: int = 100, options: dict[str, Any] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.graph = graph
        self.precision = precision
        self.output_uri = output
        self.calibration = calibration
        self.calibration_count = calibration_count
        self.options = options
        self.check_arguments()

    def check_arguments(self) -> None:
        """Raise ConfigError naming the argument and the fix; values not known yet (templates,
        XComArgs) are checked when the task runs."""
        name = type(self).__name__
        check_location(name, "graph", self.graph)
        check_location(name, "output", self.output_uri, suffix=".tflite")
        check_location(name, "calibration", self.calibration, optional=True)
        if self.precision is None:
            raise bad_argument(name, "precision", "is required and was not given.",
                               f"pass one of {', '.join(PRECISIONS)}.")
        check_choice(name, "precision", self.precision, PRECISIONS)
        check_count(name, "calibration_count", self.calibration_count, 1, example=100)
        if is_static(self.precision) and self.precision == "int8" and self.calibration is None:
            raise bad_argument(name, "calibration", "the int8 recipe calibrates activation "
                               "ranges on representative images, and none were given.",
                               "pass calibration='/data/coco_val' (a COCO dataset or an image "
                               "folder, path or s3:// URI), or convert float32/uint8.")
        if self.options is not None and is_static(self.options) and \
                not isinstance(self.options, dict):
            raise bad_argument(name, "options", f"must be a dict, got "
                               f"{type(self.options).__name__}.",
                               "pass e.g. options={'per_tensor': True}.")

    def run(self, context) -> dict:
        from include.pipeline.steps.convert import convert_model

        self.check_arguments()   # templates are rendered by now
        result = convert_model(str(self.graph), str(self.precision), str(self.output_uri),
                               calibration=self.calibration, conn_id=self.conn_id,
                               calibration_count=self.calibration_count, options=self.options)
        self.log.info("converted %s (%s): %s, %d bytes", self.graph, self.precision,
                      result["model_uri"], result["size_bytes"])
        self.ol_datasets = ([str(self.graph)], [result["model_uri"]])
        return result
