# syntax=docker/dockerfile:1
#
# The worker image: `docker build -t transcoder .` then `docker run transcoder` runs
# `transcoder worker`. Other sub-commands: `docker run transcoder bootstrap`, `... status ID`.
#
# Two stages. The first builds the package and its dependencies into a virtualenv at /opt/venv
# (every dependency ships wheels, so no compiler is needed, but pip, setuptools and the source
# tree stay in this stage). The second is python:slim plus Debian's ffmpeg and tini, the venv
# copied in, and nothing else: no pip, no build tools, no source tree.
#
# Pin the base image by digest for production builds, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY transcoder ./transcoder
COPY enqueue_lambda ./enqueue_lambda
COPY autoscaling ./autoscaling
# A regular (not editable) install: the venv must not point back into /src.
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/venv/bin/python -c "import transcoder.ops.cli, enqueue_lambda.handler"

FROM ${PYTHON_IMAGE} AS runtime
# Debian bookworm's ffmpeg (5.1, with libx264 and ffprobe) and tini. tini is PID 1 under
# `docker run`/compose and forwards SIGTERM to Python, which drains and hands jobs back; ffmpeg
# children are not signalled directly (no -g) because the worker decides whether a job finishes
# inside the grace period. -s (subreaper) keeps tini correct when ECS's own init
# (initProcessEnabled) is PID 1 instead.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends ffmpeg tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /home/transcoder --create-home \
      --shell /usr/sbin/nologin transcoder \
 && install -d -o transcoder -g transcoder -m 0750 /scratch
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRANSCODER_SCRATCH_DIR=/scratch \
    TRANSCODER_METRICS_PORT=9100
USER 10001:10001
WORKDIR /home/transcoder
EXPOSE 9100
# /healthz answers 200 while the worker loop is alive (503 when it stalls). Python's urllib
# raises on any non-2xx, so the exit status is the health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRANSCODER_METRICS_PORT', '9100'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "transcoder"]
CMD ["worker"]
