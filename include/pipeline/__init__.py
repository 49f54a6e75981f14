"""The conversion pipeline, Airflow-free: the typed run plan (`plan.py`), one module per step
(`steps/`), the store inputs a task reads (`inputs.py`), what each task costs (`costs.py`),
the landing rules of a checkpoint store (`landing.py`) and the retrain job (`retrain.py`).

The DAG's operators (`operators/pipeline.py`) and the CLI call the steps; artifacts move
between steps only through the artifact store, and each step returns small JSON.
"""
