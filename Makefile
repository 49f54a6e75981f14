# One entry point for people and CI. Every target creates .venv at the repository root when it
# is missing and installs the pinned requirements into it, so a fresh clone needs nothing else.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# tf-keras (Keras 2) is the Keras that tensorflow-model-optimization's QAT works with.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install test demo bench bench-train clean

install: $(STAMP)

# --compile-bytecode: every process (each Airflow task, each CLI call) then reads .pyc files
# instead of compiling sources it imports, which it cannot cache where PYTHONDONTWRITEBYTECODE
# is set (Airflow's own images compile too).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements-dev.txt
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/mobiledet demo

# Airflow on this machine with this project's DAGs (SQLite + LocalExecutor; Ctrl-C stops it).
# Options after SERVE_ARGS=, e.g. make serve SERVE_ARGS="--data demo/data --port 8081".
.PHONY: serve test-stack
serve: install
	$(BIN)/mobiledet serve $(SERVE_ARGS)

# The production shape natively: PostgreSQL + Redis + Celery worker + S3 (a few minutes).
test-stack: install
	$(BIN)/python -m pytest -q tests/test_landing_stack.py tests/test_stack.py tests/test_compose.py

bench: install
	$(BIN)/python bench/model_sizes.py

bench-train: install
	$(BIN)/python bench/train_accuracy.py

clean:
	rm -rf $(VENV) .airflow demo runs
