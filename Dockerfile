# syntax=docker/dockerfile:1
# One image for every role: the receiver, the Dagster code server (and the runs it launches), the webserver
# and the daemon. The role is the command (deploy/README.md and the README's "Deployment" section):
#   everreach-data serve --host 0.0.0.0 --port 8000 --workers 2      the receiver (the default)
#   dagster code-server start -h 0.0.0.0 -p 4000 -m everreach_data.definitions
#   dagster-webserver -h 0.0.0.0 -p 3000 -w deploy/compose/workspace.yaml
#   dagster-daemon run -w deploy/compose/workspace.yaml
#   everreach-data migrate
# Secrets come from the environment at run time (a Kubernetes Secret, an env file), never from the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler for any dependency that has no wheel for the target platform; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /app
# Dependencies first, in a layer that changes only with pyproject.toml: empty packages stand in for the code.
# Behind a TLS-intercepting proxy, pass its CA bundle as the build secret "ca-bundle" (deploy/build-image
# --ca-bundle FILE): pip trusts it for this step only, and it is not left in any layer.
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && mkdir everreach_data everreach_sandbox \
 && touch everreach_data/__init__.py everreach_sandbox/__init__.py \
 && /opt/venv/bin/pip install --editable ".[deploy]"
# The project itself, installed in place: migrations are read from /app/sql beside the package.
COPY everreach_data everreach_data
COPY everreach_sandbox everreach_sandbox
COPY sql sql
COPY dagster.yaml workspace.yaml ./
COPY deploy deploy
RUN /opt/venv/bin/python -m compileall -q everreach_data everreach_sandbox \
 && /opt/venv/bin/everreach-data --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    EVERREACH_HOME=/tmp/everreach
RUN useradd --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin everreach
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# Dagster's instance: this repository's dagster.yaml (storage from DAGSTER_PG_URL or DATABASE_URL). On
# Kubernetes the Helm chart mounts its own instance over it.
RUN mkdir -p "$DAGSTER_HOME" && cp /app/dagster.yaml "$DAGSTER_HOME/dagster.yaml" && chown -R everreach:everreach "$DAGSTER_HOME"
WORKDIR /app
USER 10001:10001
EXPOSE 8000 3000 4000
CMD ["everreach-data", "serve", "--host", "0.0.0.0", "--port", "8000"]
