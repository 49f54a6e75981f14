"""convert_and_validate: one MobileDet export -> a .tflite model whose output contract is checked.

Put this file in your DAGs folder (with this project installed: `pip install -e .`) and trigger
it with the export to convert, e.g.
    {"graph": "s3://models/exports/edgetpu-float", "precision": "int8",
     "calibration": "s3://data/coco_val_subset", "output": "s3://models/tflite/edgetpu-int8"}
Paths and s3:// URIs both work; s3:// goes through the Airflow connection `conn_id`.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from operators import OutputContractOperator, TFLiteConvertOperator

with DAG(
    dag_id="convert_and_validate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,   # a param left at null stays None
    params={
        "graph": Param("/data/exports/edgetpu-float", type="string",
                       description="export folder or TFOD bundle (tflite_graph.pb)"),
        "precision": Param("float32", enum=["float32", "dynamic", "float16", "int8", "uint8"]),
        "calibration": Param(None, type=["null", "string"],
                             description="int8: a COCO dataset or a folder of images"),
        "output": Param("/data/tflite/edgetpu", type="string",
                        description="folder for model.tflite and the contract's results"),
        "conn_id": Param("aws_default", type="string"),
    },
) as dag:
    convert = TFLiteConvertOperator(
        task_id="convert",
        graph="{{ params.graph }}",
        precision="{{ params.precision }}",
        calibration="{{ params.calibration }}",
        output="{{ params.output }}/model.tflite",
        conn_id="{{ params.conn_id }}",
    )
    contract = OutputContractOperator(
        task_id="contract",
        model="{{ ti.xcom_pull(task_ids='convert')['model_uri'] }}",
        sha256="{{ ti.xcom_pull(task_ids='convert')['sha256'] }}",
        data="{{ params.calibration }}",
        output="{{ params.output }}/contract",
        conn_id="{{ params.conn_id }}",
    )
    convert >> contract
