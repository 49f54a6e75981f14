"""The pipeline's one typed config: store, precisions per variant, gate thresholds, run sizes.

Load it with :func:`load_config`, from a YAML or JSON file, from a dict (Airflow run params), or
from nothing at all (every field has a default that works out of the box). The settings are
pydantic v2 models (:class:`PipelineConfig`, :class:`GateConfig`): they are validated when
loaded, and an error (:class:`include.errors.ConfigError`) names where the value came from and
its key path, the bad value, the allowed values and the fix. An unknown key is refused with the
nearest valid name ("did you mean gates.min_map?"). :func:`config_schema` is the JSON schema of
the file (``mobiledet config --schema`` prints it); :func:`overrides_schema` is the schema of
the DAG's ``overrides`` param.

Where the settings come from, lowest to highest precedence:

1. the defaults below;
2. the config file (YAML or JSON), if one is given;
3. the environment variable ``MOBILEDET_STORE`` (the store URI only);
4. ``overrides``: a dict such as Airflow run params or CLI ``--set`` pairs; dotted keys
   (``"gates.min_map": 0.3``) address nested fields.

The store (``store_uri``) is a local folder, ``file:///abs/path`` or ``s3://bucket/prefix``.
Without a setting it is ``./mobiledet-store`` in the current working directory. A relative
folder is resolved against the config file's folder when it comes from a file, and against the
current working directory otherwise; the loaded config always holds an absolute path, so every
task and the manifest see the same location.

Example (YAML)::

    store_uri: s3://models/mobiledet       # or a folder
    conn_id: aws_default                   # Airflow connection for s3://
    model_name: mobiledet
    precisions:
      cpu: [float32, int8]                 # for any checkpoint kind, or per kind:
      edgetpu: {float: [float32, int8], qat: [float32, uint8]}
    gates:
      metric: AP50
      max_map_drop: {int8: 0.04}           # merged with the defaults
      max_latency_ms: 150
"""
from __future__ import annotations

from include.config.files import (config_schema, load_config, overrides_schema, parse_overrides,
                                  read_config_file)
from include.config.model import (ACCELERATOR_VARIANTS, CHECKPOINT_KINDS, DEFAULT_CONN_ID,
                                  DEFAULT_MATRIX, DEFAULT_MAX_MAP_DROP, DEFAULT_MODEL_NAME,
                                  DEFAULT_STORE_DIR, EDGETPU_GATE_MODES, GATE_METRICS,
                                  MIN_MAP_FLOOR, PRECISIONS, STORE_ENV, DeviceConfig,
                                  GateConfig, LedgerConfig, PipelineConfig, RetentionConfig, PrecisionsPerKind, check_precisions,
                                  default_precisions, store_setting)

__all__ = ["ACCELERATOR_VARIANTS", "CHECKPOINT_KINDS", "DEFAULT_CONN_ID", "DEFAULT_MATRIX",
           "DEFAULT_MAX_MAP_DROP", "DEFAULT_MODEL_NAME", "DEFAULT_STORE_DIR",
           "EDGETPU_GATE_MODES", "GATE_METRICS", "MIN_MAP_FLOOR", "PRECISIONS", "STORE_ENV",
           "DeviceConfig", "GateConfig", "LedgerConfig", "PipelineConfig", "RetentionConfig", "PrecisionsPerKind", "check_precisions",
           "config_schema", "default_precisions", "load_config", "overrides_schema",
           "parse_overrides", "read_config_file", "store_setting"]
