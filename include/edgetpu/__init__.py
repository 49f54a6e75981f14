"""Edge TPU: run Coral's compiler, read what it prints, and predict the mapping offline.

- `compiler.compile_model(model, out_dir, ...) -> CompileResult` runs `edgetpu_compiler`
  (status "compiled" / "failed" / "timeout" / "not_installed").
- `logparse.parse_compiler_output(stdout, log_text=None) -> CompileReport` and
  `logparse.parse_operation_log(text)` read its stdout and `<name>_edgetpu.log`.
- `analyze.analyze_model(path) -> dict` predicts, without the compiler, which ops map.
- `tflite_model.read_model(path) -> ModelInfo` is the flatbuffer reader underneath.

Names are re-exported lazily so `import include.edgetpu` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "compile_model": "compiler", "find_compiler": "compiler", "CompileResult": "compiler",
    "HOW_TO_INSTALL": "compiler",
    "parse_compiler_output": "logparse", "parse_operation_log": "logparse",
    "parse_operator_table": "logparse", "format_operator_table": "logparse",
    "CompileReport": "logparse", "parse_size": "logparse",
    "analyze_model": "analyze", "analyze_model_info": "analyze", "format_report": "analyze",
    "read_model": "tflite_model", "ModelInfo": "tflite_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
