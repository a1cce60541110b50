# Textbridge. `make demo` runs the whole stack on this machine; `make test` runs every test.
# Both install what they need: Debian packages (scripts/install-deps) and venvs from locked,
# hashed requirements.

PYTHON  ?= python3
VENV    := .venv
SYN     := .venv-synapse
PY      := $(VENV)/bin/python
PIPOPTS := --disable-pip-version-check --quiet --require-hashes
PYTEST_ARGS ?=
# Workers for `make test`: twice the cores, since much of the suite waits on Synapse, ptys and
# subprocesses. Tests that must not overlap are grouped in tests/conftest.py (--dist loadgroup).
PYTEST_WORKERS ?= 4

.PHONY: all deps venv synapse test lint demo lock bench clean bundle

all: venv

deps-%:
	@scripts/install-deps base $*

$(VENV)/.stamp: requirements/runtime.lock requirements/dev.lock pyproject.toml
	@scripts/install-deps base
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIPOPTS) -r requirements/runtime.lock -r requirements/dev.lock
	@# The package is used in place (a .pth entry), so edits need no reinstall.
	$(PY) -c "import os, site; open(site.getsitepackages()[0] + '/textbridge.pth', 'w').write(os.getcwd() + '\\n')"
	@touch $@

venv: $(VENV)/.stamp

# Synapse lives in its own venv: it is the homeserver under test, not part of the appliance.
$(SYN)/.stamp: requirements/synapse.lock
	@scripts/install-deps base
	$(PYTHON) -m venv $(SYN)
	$(SYN)/bin/pip install $(PIPOPTS) -r requirements/synapse.lock
	@touch $@

synapse: $(SYN)/.stamp

test: deps-test venv synapse
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check appliance tests bench hil
	$(VENV)/bin/mypy

demo: deps-demo venv synapse
	$(PY) -m appliance demo

bench: deps-test venv synapse
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Re-resolve the locks (needs the registries). Hashes cover every platform's files, so the
# same locks install on the Pi (arm64, Python 3.13).
lock:
	$(PYTHON) -m venv build/piptools
	build/piptools/bin/pip install --quiet pip-tools
	cd requirements && for f in runtime dev synapse; do \
	  ../build/piptools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras -o $$f.lock $$f.in; done

# A signed RAUC bundle of the root filesystem `make image` leaves in build/image/rootfs
# (docs/update.md). Without BUNDLE_CERT/BUNDLE_KEY it is signed with a development key made in
# build/dev-key/, which only a development image trusts: never publish such a bundle.
BUNDLE_ROOTFS  ?= build/image/rootfs
BUNDLE_VERSION ?= $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
BUNDLE_CERT    ?= build/dev-key/dev.cert.pem
BUNDLE_KEY     ?= build/dev-key/dev.key.pem
BUNDLE_KEYRING ?= $(BUNDLE_CERT)
BUNDLE_OUT     ?= build/textbridge-$(BUNDLE_VERSION)-rpi-arm64.raucb
bundle:
	@scripts/install-deps test
	@if [ "$(BUNDLE_CERT)" = build/dev-key/dev.cert.pem ]; then scripts/make-bundle dev-key build/dev-key >/dev/null; fi
	scripts/make-bundle --rootfs $(BUNDLE_ROOTFS) --version $(BUNDLE_VERSION) \
	  --cert $(BUNDLE_CERT) --key $(BUNDLE_KEY) --keyring $(BUNDLE_KEYRING) \
	  --out $(BUNDLE_OUT)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

# `make image` and `make image-test` (the flashable image, booted under QEMU).
include image/image.mk
