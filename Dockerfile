# syntax=docker/dockerfile:1
#
# The image docker-compose runs (scheduler, API server, workers): Airflow 3 + this project +
# Coral's Edge TPU compiler.
#
# NOTE: this Dockerfile was written on a machine without a Docker engine and has NOT been built
# there. Build and smoke-test it before relying on it:
#     docker build -t mobiledet-pipeline .
#     docker run --rm mobiledet-pipeline bash -c "edgetpu_compiler --version && mobiledet --version"
#
# The Edge TPU compiler exists only as the Debian package `edgetpu-compiler` in Coral's apt
# repository, and only for x86-64 (amd64). On other architectures (e.g. an arm64 laptop) the
# image is built without it and the pipeline reports the Edge TPU step as "not installed"
# (build with --platform linux/amd64 to get the compiler there).

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER root

# Coral's apt repository, with its key in a dedicated keyring (signed-by), then the compiler.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    arch="$(dpkg --print-architecture)"; \
    if [ "$arch" = "amd64" ]; then \
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg -o /tmp/coral-key.gpg; \
        if grep -q "BEGIN PGP PUBLIC KEY BLOCK" /tmp/coral-key.gpg; then \
            gpg --dearmor -o /usr/share/keyrings/coral-edgetpu-archive-keyring.gpg /tmp/coral-key.gpg; \
        else \
            cp /tmp/coral-key.gpg /usr/share/keyrings/coral-edgetpu-archive-keyring.gpg; \
        fi; \
        chmod 0644 /usr/share/keyrings/coral-edgetpu-archive-keyring.gpg; \
        rm -f /tmp/coral-key.gpg; \
        echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu-archive-keyring.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
            > /etc/apt/sources.list.d/coral-edgetpu.list; \
        apt-get update; \
        apt-get install -y --no-install-recommends edgetpu-compiler; \
        edgetpu_compiler --version; \
    else \
        echo "edgetpu-compiler is only published for amd64 (this build is $arch): skipped;" \
             "the Edge TPU compile step will report 'not installed'."; \
    fi; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# tf-keras (Keras 2) for tensorflow-model-optimization's QAT; quieter TensorFlow logs.
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PROJECT_HOME=/opt/airflow/project

# Python packages are installed as the airflow user, as the Airflow image expects.
USER airflow

# Pinned requirements first, so the (large) dependency layer is cached across code changes.
# requirements.txt pins apache-airflow to the base image's version, so pip keeps it as is.
COPY --chown=airflow:0 requirements.txt ${PROJECT_HOME}/requirements.txt
RUN pip install --no-cache-dir -r ${PROJECT_HOME}/requirements.txt

# The project itself. Only the source folders are copied (no .venv, caches or local runs);
# `--no-deps` because the pinned requirements are already installed.
COPY --chown=airflow:0 pyproject.toml ${PROJECT_HOME}/pyproject.toml
COPY --chown=airflow:0 include ${PROJECT_HOME}/include
COPY --chown=airflow:0 operators ${PROJECT_HOME}/operators
COPY --chown=airflow:0 dags ${AIRFLOW_HOME}/dags
# The dashboard plugin (mounted in the api-server at /mobiledet); Airflow's default plugins folder.
COPY --chown=airflow:0 plugins ${AIRFLOW_HOME}/plugins
# compileall: every task process imports these; without .pyc files each one compiles them again.
RUN pip install --no-cache-dir --no-deps -e ${PROJECT_HOME} \
    && python -m compileall -q ${PROJECT_HOME}/include ${PROJECT_HOME}/operators \
        ${AIRFLOW_HOME}/dags ${AIRFLOW_HOME}/plugins \
    && python -c "import include.edgetpu.commands, include.edgetpu.compiler" \
    && mobiledet --version

WORKDIR ${AIRFLOW_HOME}
