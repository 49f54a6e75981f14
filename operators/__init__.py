"""Airflow operators of the MobileDet pipeline: thin wrappers over `include.pipeline.stages`."""
