"""MobileDet operators for Airflow DAGs (yours and this project's), the store hook, and the
checkpoint-landing trigger. Import from the modules, or from here (loaded on first use):

    from operators import TFLiteConvertOperator, OutputContractOperator
"""
from __future__ import annotations

import importlib

_WHERE = {
    "TFLiteConvertOperator": "operators.convert",
    "CocoEvaluateOperator": "operators.quality",
    "OutputContractOperator": "operators.quality",
    "TFLiteBenchmarkOperator": "operators.quality",
    "EdgeTPUCompileOperator": "operators.edgetpu",
    "PublishModelOperator": "operators.publish",
    "MobiledetStoreHook": "operators.hooks",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'operators' has no attribute {name!r}")
