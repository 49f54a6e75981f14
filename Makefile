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

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/mobiledet demo

bench: install
	$(BIN)/python bench/model_sizes.py

bench-train: install
	$(BIN)/python bench/train_accuracy.py

clean:
	rm -rf $(VENV) .airflow demo runs
