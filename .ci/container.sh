#!/usr/bin/env bash
# CI for what ships as containers, run by .ci/run after `make test`:
#   1. build the image (../shared/tools/oci: podman on Debian, local base images, no registry)
#   2. the corpus test and a chunked job against the image's own ffmpeg/ffprobe (copied out)
#   3. the container smoke test (.ci/container_smoke.py) against a moto server on the host
#   4. the compose stack through podman-compose (.ci/compose_smoke.py)
# Without the oci tool (a user's CI, a laptop) it prints one line and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
OCI=${OCI:-$(cd .. && pwd)/shared/tools/oci}
IMAGE=localhost/transcoder:local
PY=.venv/bin/python

if [ ! -f "$OCI" ]; then
  echo "container checks skipped: $OCI not found (it installs podman); the image was not built"
  exit 0
fi
oci() { bash "$OCI" "$@"; }
now() { date +%s; }
t0=$(now)
oci setup >/dev/null
oci base >/dev/null
t1=$(now)
oci build -t "$IMAGE" . >/tmp/transcoder-image-build.log 2>&1 || { tail -60 /tmp/transcoder-image-build.log; exit 1; }
t2=$(now)
echo "image: podman setup + base images $((t1 - t0)) s, build $((t2 - t1)) s"
oci podman image inspect --format 'image: {{.Size}} bytes uncompressed' "$IMAGE"

# 2. The corpus through the worker with the image's ffmpeg first on PATH. The binaries link
# against Debian bookworm's libx264/libzimg, which `make setup`'s Debian ffmpeg already pulled
# in. The corpus itself is built (cached) with the host's full ffmpeg: it needs encoders
# (x265, VP9, MPEG-2 ...) the worker's ffmpeg deliberately lacks.
bin=$(mktemp -d /var/tmp/image-ffmpeg.XXXXXX)
cid=$(oci podman create "$IMAGE")
oci podman cp "$cid:/opt/venv/bin/ffmpeg" "$bin/ffmpeg"
oci podman cp "$cid:/opt/venv/bin/ffprobe" "$bin/ffprobe"
oci podman rm "$cid" >/dev/null
if ldd "$bin/ffmpeg" | grep -q 'not found'; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libx264-164 libzimg2 >/dev/null
fi
"$bin/ffmpeg" -hide_banner -version | head -1
[ "$(PATH="$bin:$PATH" command -v ffmpeg)" = "$bin/ffmpeg" ] || { echo "image ffmpeg not first on PATH"; exit 1; }
$PY -m samples.corpus >/dev/null
corpus=$(find tests -name test_corpus.py | head -1)
PATH="$bin:$PATH" $PY -m pytest "$corpus" -q -p no:cacheprovider -k "not cached_built_once"
# A chunked job (split, chunks, audio, stitch by the concat demuxer, HLS copy, stills) on the
# image's ffmpeg: its clip is built first with the host's ffmpeg (it needs lavfi).
PYTHONPATH=tests $PY -c "from faults.clips import clip; clip(24); clip(8)"
chunked=$(find tests -name test_chunked_jobs.py | head -1)
PATH="$bin:$PATH" $PY -m pytest "$chunked" -q -p no:cacheprovider -k "matches_the_single_pass"
rm -rf "$bin"
t3=$(now)
echo "image: corpus with the image's ffmpeg $((t3 - t2)) s"

# 3 and 4.
$PY .ci/container_smoke.py --oci "$OCI" --image "$IMAGE"
t4=$(now)
echo "image: container smoke $((t4 - t3)) s"
oci build -t localhost/transcoder-localstack-moto:local -f container/emulator/Containerfile container/emulator >/dev/null
oci build -t localhost/transcoder-prometheus-debian:local -f container/prometheus/Containerfile container/prometheus >/dev/null
$PY .ci/compose_smoke.py --oci "$OCI"
t5=$(now)
echo "image: compose run $((t5 - t4)) s; all container checks $((t5 - t0)) s"
