"""The runtime: what starts and tunes Airflow for this project, and the `run`, `demo` and
`serve` front doors. The pipeline's steps (include/pipeline/) know nothing of it.

processes.py      ManagedProcess: one command in its own process group, stopped by id
environment.py    AirflowSettings and the one environment every component gets
components.py     AirflowDeployment: migrate, start, health, the heavy tasks' pool, stop
client.py         Airflow's REST API: AirflowClient, trigger_and_follow
airflow_env.py    AIRFLOW_HOME, the metadata DB and dag.test for the CLI and the tests
live_run.py       `mobiledet run` in this process: task output to a log file, the task
                  instances polled from the metadata DB for the live view
run_view.py       the live view: a line per step of the run
run_commands.py   `mobiledet run` (here, or on a deployment with --airflow)
demo_commands.py  `mobiledet demo`
serve_commands.py `mobiledet serve`
deployment.py     what the DAG files read from a deployment's settings
task_policy.py    retries, time limits and the pool of each task
preload.py        heavy libraries imported once per worker, before it forks tasks
celery_worker.py  the Celery config with that preload (AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS)
executors.py      PreloadingLocalExecutor, the same for the LocalExecutor
"""
