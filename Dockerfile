# syntax=docker/dockerfile:1
#
# The worker image: `docker build -t transcoder .` then `docker run transcoder` runs
# `transcoder worker`. Other sub-commands: `docker run transcoder bootstrap`, `... status ID`.
#
# Three stages, so the image carries only what the worker runs (README "Docker"):
#   ffmpeg   compiles a minimal FFmpeg (container/ffmpeg-configure.sh) from Debian's own source
#            package against Debian's libx264 and libzimg: every decoder docs/media.md accepts,
#            x264, AAC, zscale/tonemap and the worker's filters; none of the GPU, speech, X11 or
#            streaming stacks Debian's ffmpeg package drags in (589 MB of the old 817 MB image).
#   build    installs the locked runtime set (requirements/runtime.txt, hash-checked), the
#            package and the compiled ffmpeg/ffprobe into /opt/venv; pip, setuptools and the
#            source tree stay behind.
#   runtime  python slim + tini + the two codec libraries + the venv.
#
# Build arguments (all default to nothing):
#   PIP_INDEX_URL   a package index to install from instead of PyPI (a private mirror)
#   EXTRA_CA_CERT   PEM text of one more CA to trust while downloading, for a TLS-inspecting
#                   proxy: --build-arg EXTRA_CA_CERT="$(cat corp-ca.pem)". Used in the build
#                   stages only; the runtime image keeps Debian's CA bundle.
# Pin the base images by digest for production builds, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS ffmpeg
ARG EXTRA_CA_CERT=""
# `apt-get source` fetches the FFmpeg release Debian bookworm ships (with its security fixes),
# from the same mirror as every other package: no other download site is needed.
RUN sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources \
 && if [ -n "$EXTRA_CA_CERT" ]; then printf '%s\n' "$EXTRA_CA_CERT" >/tmp/extra-ca.pem \
      && echo 'Acquire::https::CaInfo "/tmp/extra-ca.pem";' >/etc/apt/apt.conf.d/99extra-ca; fi \
 && apt-get update \
 && apt-get install --yes --no-install-recommends \
      gcc libc6-dev make nasm pkg-config xz-utils libx264-dev libzimg-dev zlib1g-dev libgnutls28-dev \
 && mkdir /src && cd /src && apt-get source --download-only ffmpeg \
 && tar -xf ffmpeg_*.orig.tar.xz && rm ffmpeg_*
COPY container/ffmpeg-configure.sh /usr/local/bin/
RUN set -e; cd /src/ffmpeg-*; \
    PREFIX=/opt/ffmpeg ffmpeg-configure.sh >/tmp/configure.log 2>&1 || { tail -30 /tmp/configure.log; exit 1; }; \
    make -j"$(nproc)" >/tmp/make.log 2>&1 || { tail -40 /tmp/make.log; exit 1; }; \
    make install >/dev/null; \
    strip /opt/ffmpeg/bin/ffmpeg /opt/ffmpeg/bin/ffprobe; \
    /opt/ffmpeg/bin/ffmpeg -hide_banner -filters | grep -q zscale; \
    /opt/ffmpeg/bin/ffmpeg -hide_banner -protocols | grep -qx '  https'

FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL=""
ARG EXTRA_CA_CERT=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements/build.txt requirements/runtime.txt ./requirements/
# Exactly the locked versions, every file hash-checked.
RUN set -e; [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    if [ -n "$EXTRA_CA_CERT" ]; then \
      cat /etc/ssl/certs/ca-certificates.crt >/tmp/ca.pem; printf '%s\n' "$EXTRA_CA_CERT" >>/tmp/ca.pem; \
      export PIP_CERT=/tmp/ca.pem; fi; \
    /opt/venv/bin/pip install --require-hashes -r requirements/build.txt; \
    /opt/venv/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY transcoder ./transcoder
COPY enqueue_lambda ./enqueue_lambda
COPY autoscaling ./autoscaling
# The package itself: no resolution (--no-deps), the locked setuptools (--no-build-isolation).
# A regular (not editable) install: the venv must not point back into /src.
# The compiled ffmpeg and ffprobe travel in the venv's bin/ (on PATH), so the final stage
# copies exactly one tree.
COPY --from=ffmpeg /opt/ffmpeg/bin/ffmpeg /opt/ffmpeg/bin/ffprobe /opt/venv/bin/
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/venv/bin/python -c "import transcoder.ops.cli, enqueue_lambda.handler, enqueue_lambda.relay"

FROM ${PYTHON_IMAGE} AS runtime
# tini is PID 1 under `docker run`/compose and forwards SIGTERM to Python, which drains and hands
# jobs back; ffmpeg children are not signalled directly (no -g) because the worker decides
# whether a job finishes inside the grace period. -s (subreaper) keeps tini correct when ECS's
# own init (initProcessEnabled) is PID 1 instead. libx264-164 and libzimg2 are the only shared
# libraries the compiled ffmpeg needs beyond what the base has (glibc, zlib, GnuTLS for https).
# The group is created first with the same id as the user: `useradd --user-group` would pick a
# free system gid (999) while USER says 10001:10001.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends tini libx264-164 libzimg2 libgnutls30 \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/dpkg.log /var/log/apt \
 && groupadd --system --gid 10001 transcoder \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/transcoder --create-home \
      --shell /usr/sbin/nologin transcoder \
 && install -d -o 10001 -g 10001 -m 0750 /scratch
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRANSCODER_SCRATCH_DIR=/scratch \
    TRANSCODER_METRICS_PORT=9100
RUN ffmpeg -hide_banner -version >/dev/null && ffprobe -hide_banner -version >/dev/null
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
