# The README's commands. `make demo` and `make test` work on a fresh Debian machine:
# they install ffmpeg when it is missing (as root), create .venv and install the locked
# dependency set (requirements/*.txt, refreshed by `make lock`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv resolves for every platform (so the lock installs on macOS and arm64 too) and records hashes.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --upgrade
export UV_NATIVE_TLS := 1

.PHONY: demo test lint setup ffmpeg clean lock browser hls-js

demo: setup
	$(BIN)/transcoder demo

test: setup browser
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

setup: ffmpeg $(VENV)/.installed

ffmpeg:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing Debian's ffmpeg"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; }

# The player page's browser test (tests/e2e/test_player.py): Debian's chromium, and playwright-core
# with the pinned hls.js from the npm registry, exactly as tests/browser/package-lock.json says.
# Never `npx playwright install`: it downloads a browser of its own, which this network refuses.
browser:
	@command -v chromium >/dev/null && command -v npm >/dev/null || { \
	  echo "installing Debian's chromium (and npm when missing)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  PKGS=chromium; command -v npm >/dev/null || PKGS="$$PKGS nodejs npm"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$PKGS; }
	cd tests/browser && npm ci --no-audit --no-fund

# Refresh the hls.js shipped with the page: change its pin in tests/browser/package.json, then this.
hls-js:
	cd tests/browser && npm install --no-audit --no-fund
	cp tests/browser/node_modules/hls.js/dist/hls.light.min.js transcoder/ops/player/
	cp tests/browser/node_modules/hls.js/LICENSE transcoder/ops/player/LICENSE.hls.js.txt
	@echo "now update the version in transcoder/ops/player/README.md"

# Exactly the locked versions (hash-checked), then the project itself without touching them.
$(VENV)/.installed: pyproject.toml requirements/build.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/build.txt
	$(BIN)/pip install -q --require-hashes -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve every dependency set to the newest releases pyproject.toml allows. The runtime set
# is constrained to the dev set, so the image runs exactly the versions the tests ran.
lock: $(VENV)/.installed
	$(LOCK) pyproject.toml --extra dev -o requirements/dev.txt
	$(LOCK) pyproject.toml --constraint requirements/dev.txt -o requirements/runtime.txt
	$(LOCK) requirements/build.in -o requirements/build.txt
	$(LOCK) container/emulator/requirements.in --constraint requirements/dev.txt -o container/emulator/requirements.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
