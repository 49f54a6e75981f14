"""EdgeTPUCompileOperator: the Edge TPU compiler (where installed) and the offline op-mapping
prediction of one integer .tflite model.

    EdgeTPUCompileOperator(task_id="edgetpu", model="s3://models/tflite/int8/model.tflite",
                           output="s3://models/tflite/int8", require_compiled=True)

It calls `include.pipeline.steps.edgetpu.edgetpu_compile` (the pipeline's own Edge TPU step
uses it too):
`include.edgetpu.analyze` predicts which ops map, `include.edgetpu.compiler` runs
`edgetpu_compiler` with a timeout. model_edgetpu.tflite (when it compiled) and edgetpu.json go
into `output`. The XCom: status (compiled, not_installed, failed, timeout), message, op counts,
the prediction. A killed task stops the compiler's process group (`on_kill`).
"""
from __future__ import annotations

# the SSD post-process op always runs on the CPU (as include.gates counts it)
from include.gates import POSTPROCESS_OPS
from operators.base import MobiledetOperator, check_location, check_number


class EdgeTPUCompileOperator(MobiledetOperator):
    """Compile one .tflite for the Edge TPU and predict its op mapping offline.

    :param model: an integer (int8/uint8) .tflite, local path or store URI. Templated.
    :param output: the folder (path or URI) for model_edgetpu.tflite and edgetpu.json.
        Templated.
    :param sha256: the model's recorded sha256; another file is refused. Templated.
    :param timeout_s: the compiler's time limit in seconds (default 180).
    :param require_compiled: fail the task unless the compiler ran and compiled the model
        (default: a missing compiler is reported as status not_installed, with the prediction).
    :param require_mapped: fail the task when an op other than the SSD post-process op stays
        on the CPU (by the compiler's count, else the prediction's).
    """

    template_fields = ("model", "output_uri", "sha256", "conn_id")
    ui_color = "#fef7e0"

    def __init__(self, *, model: str | None = None, output: str | None = None,
                 sha256: str | None = None, timeout_s: float = 180,
                 require_compiled: bool = False, require_mapped: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.output_uri = output
        self.sha256 = sha256
        self.timeout_s = timeout_s
        self.require_compiled = require_compiled
        self.require_mapped = require_mapped
        self.check_arguments()

    def check_arguments(self) -> None:
        name = type(self).__name__
        check_location(name, "model", self.model, suffix=".tflite")
        check_location(name, "output", self.output_uri)
        check_number(name, "timeout_s", self.timeout_s, optional=False)

    def run(self, context) -> dict:
        from include.errors import EdgeTPUError
        from include.pipeline.steps.edgetpu import edgetpu_compile

        self.check_arguments()
        result = edgetpu_compile(str(self.model), str(self.output_uri), sha256=self.sha256,
                                 timeout_s=self.timeout_s, conn_id=self.conn_id)
        self.log.info("Edge TPU: %s; %s of %s ops mapped (decided by %s)", result["status"],
                      result.get("ops_on_tpu"), result.get("ops_total"), result["decided_by"])
        if self.require_compiled and result["status"] != "compiled":
            raise EdgeTPUError(result["message"], where=str(self.model),
                               fix="install edgetpu_compiler (or set EDGETPU_COMPILER), or "
                                   "pass require_compiled=False to accept the prediction.")
        on_cpu = [u for u in result.get("unmapped_ops") or []
                  if u.get("op") not in POSTPROCESS_OPS]
        if self.require_mapped and on_cpu:
            raise EdgeTPUError("ops stay on the CPU: " + ", ".join(
                f"{u['op']} x{u['count']} ({u['reason']})" for u in on_cpu) + ".",
                where=str(self.model), fix="convert with the full-integer recipe (int8 or "
                                           "uint8), or pass require_mapped=False.")
        return result

    def on_kill(self) -> None:
        """A killed task must not leave the compiler running: stop its process groups."""
        from include.edgetpu.compiler import kill_running
        kill_running()

