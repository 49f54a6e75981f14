"""The typed run plan: what one conversion run converts, and the jobs it fans out into.

The plan step (`include.pipeline.steps.plan`) builds a :class:`RunPlan` from the run's params
and the checkpoints' headers; it travels between tasks as JSON (XCom) and every task validates
it once, on the way in (:meth:`RunPlan.of`). After that a step reads typed fields, never a dict
with defaults restated:

* :class:`RunPlan`: the run id (store-safe), the typed pipeline config, the evaluation and
  calibration data, the evaluation dataset's fingerprint, the checkpoints, warnings, and the
  checkpoints another run had already claimed;
* :class:`Checkpoint`: one checkpoint of the run (uri, kind, variant, QAT or not, fingerprint,
  creation time, model spec, its precisions, and `ckpt_id`, its folder name in the run);
* :class:`Job`: one (checkpoint, precision) to convert, named ``variant/precision`` for
  people; :class:`ConvertedModel`: a job with its converted model.

A precision is validated once, where the plan is made (`check_precisions` for the variant and
checkpoint kind, then the `Precision` type of :class:`Job`); the steps trust the typed job.
Store keys of a run come from `include.store.layout`.
"""
from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from include.config import PipelineConfig
from include.convert.recipes import PRECISIONS, RECIPES
from include.mobiledet.spec import VARIANTS
from include.store import layout

Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
Variant = Literal[VARIANTS]  # type: ignore[valid-type]
#: "checkpoint" (mobiledet train), "export", "tfod" (a TFOD export bundle), "tfod-training" (a
#: step of a TFOD TF1 training folder, imported at export)
CheckpointKind = Literal["checkpoint", "export", "tfod", "tfod-training"]


def safe_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; store keys get a portable form."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(run_id)).strip("_") or "run"


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class Checkpoint(_Typed):
    """One checkpoint of the run, as its header (checkpoint.json, or a bundle's config) says."""

    uri: str
    kind: CheckpointKind
    variant: Variant
    qat: bool
    fingerprint: Optional[str] = None
    created: Optional[str] = None
    spec: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: Optional[str] = None
    ckpt_id: str
    precisions: list[Precision]
    #: lineage of an imported checkpoint (a TFOD training step: prefix, step, config sha256)
    lineage: dict[str, Any] = Field(default_factory=dict)
    #: the checkpoint's ledger record, where the run claimed it there
    ledger_id: Optional[str] = None

    @property
    def input_size(self) -> int | None:
        size = self.spec.get("input_size")
        return int(size) if size else None


class Job(_Typed):
    """One (checkpoint, precision) of the run."""

    name: str
    ckpt_id: str
    variant: Variant
    qat: bool
    precision: Precision
    export_uri: str
    #: the store folder of a model that does not live in the job's own folder (the recipe
    #: search's choice: PRECISION-search)
    key: Optional[str] = None

    @property
    def calibrated(self) -> bool:
        """Its recipe calibrates on representative data (the long conversion)."""
        return RECIPES[self.precision].calibrated

    def job(self) -> "Job":
        """The plain job (a converted model's job, for tables keyed by job)."""
        return Job(**{k: getattr(self, k) for k in Job.model_fields})


class ConvertedModel(Job):
    """A job with its model in the store (the convert step's result)."""

    model_uri: str
    conversion_uri: str
    size_bytes: int
    sha256: str
    input: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    #: the recipe search's chosen candidate, for its model
    recipe: Optional[str] = None


def job_name(variant: str, precision: str, qat: bool) -> str:
    return f"{variant}/{precision}" + (" (qat)" if qat else "")


class RunPlan(_Typed):
    """Everything a run's tasks share. Build with `include.pipeline.steps.plan.plan`; read in a
    task with :meth:`of` (validated once)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              ignored_types=(cached_property,))

    run_id: str
    config: PipelineConfig
    data: str
    calibration: str
    evaluation_data_fingerprint: Optional[str] = None
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    already_claimed: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value):
        if isinstance(value, PipelineConfig):
            return value
        return PipelineConfig.from_dict(value, source="the run plan's config")

    @field_serializer("config")
    def _dump_config(self, config: PipelineConfig) -> dict:
        return config.to_dict()

    @classmethod
    def of(cls, value: "RunPlan | dict") -> "RunPlan":
        """The plan from a task's argument (the plan task's XCom), validated."""
        return value if isinstance(value, RunPlan) else cls.model_validate(value)

    # -- the run's store ------------------------------------------------------------------
    @cached_property
    def store(self):
        """The run's artifact store (opened once per task)."""
        from include.store import open_store
        return open_store(self.config.store_uri, conn_id=self.config.conn_id)

    @property
    def conn_id(self) -> str | None:
        return self.config.conn_id

    @cached_property
    def ledger(self):
        """The checkpoint ledger of the run's model (include/store/ledger.py)."""
        from include.store.ledger import Ledger
        return Ledger(self.store, self.config.model_name, **self.config.ledger.model_dump())

    # -- lookups ----------------------------------------------------------------------------
    def checkpoint(self, ckpt_id: str) -> Checkpoint:
        for c in self.checkpoints:
            if c.ckpt_id == ckpt_id:
                return c
        raise KeyError(ckpt_id)

    def model_key(self, job: Job) -> str:
        """The store folder of one model of the run (the job's own `key` where it has one)."""
        return job.key or layout.model_prefix(self.run_id, job.ckpt_id, job.precision)

    def rank(self, ckpt_id: str, precision: str) -> tuple[int, int]:
        """Where a (checkpoint, precision) stands in the plan's order."""
        for i, c in enumerate(self.checkpoints):
            if c.ckpt_id == ckpt_id and precision in c.precisions:
                return i, c.precisions.index(precision)
        return len(self.checkpoints), 0

    def in_plan_order(self, items: list) -> list:
        """Jobs (or anything with ckpt_id and precision) in the plan's order: the decisions,
        the report and the manifest read that way, whatever order the workers ran them in."""
        def key(item):
            get = item.get if isinstance(item, dict) else lambda k: getattr(item, k)
            return self.rank(get("ckpt_id"), get("precision"))
        return sorted(items, key=key)
