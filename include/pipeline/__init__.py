"""The conversion pipeline's stages as plain functions (Airflow-free).

Airflow operators in `operators/` and the `mobiledet run` CLI both call these; artifacts move
between stages only through the artifact store, and each stage returns small JSON.
"""
