"""OpenLineage: what each MobileDet task read and wrote, where users already look.

Airflow's OpenLineage provider (apache-airflow-providers-openlineage) asks an operator for
`get_openlineage_facets_on_complete(task_instance)` when the task ends. The pipeline's tasks
answer with the datasets of the chain checkpoint -> export -> models -> release, and the
publish adds the gate's verdict of each model as a data-quality facet (one assertion per gate
check). Off unless OpenLineage is configured, as the provider is
(``AIRFLOW__OPENLINEAGE__TRANSPORT``, e.g. ``{"type": "file", "log_file_path": "..."}``, or
``{"type": "http", "url": "http://marquez:5000"}``).

Dataset names follow OpenLineage's naming: ``s3://BUCKET`` and the key for S3, ``file`` and the
absolute path for a local folder.
"""
from __future__ import annotations

from include.store.uri import StoreURI


class LineageMixin:
    """Mixed into an operator: `self.ol_datasets = (inputs, outputs)` as store URIs (and, for the
    release, `self.ol_verdicts`), answered to the OpenLineage provider when the task ends."""

    ol_datasets: tuple[list, list] | None = None
    ol_verdicts: dict | None = None

    def get_openlineage_facets_on_complete(self, task_instance):  # noqa: ARG002
        if not self.ol_datasets:
            return None
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = self.ol_datasets
        return OperatorLineage(inputs=[dataset(u) for u in inputs if u],
                               outputs=[dataset(u, (self.ol_verdicts or {}).get(u))
                                        for u in outputs if u])


def dataset(uri: str, checks: list[dict] | None = None):
    """An OpenLineage dataset for a store URI (with the gate's checks as data-quality
    assertions, where given)."""
    from openlineage.client.event_v2 import Dataset

    where = StoreURI.parse(uri)
    namespace, name = ("file", where.path) if where.local else \
        (f"s3://{where.bucket}", where.key)
    facets = {}
    if checks:
        from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

        facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(
            assertions=[dq.Assertion(assertion=str(c.get("name")), success=bool(c.get("passed")))
                        for c in checks])
    return Dataset(namespace=namespace, name=name, facets=facets)
