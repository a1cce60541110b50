# The flashable image. Included from the top Makefile (`include image/image.mk`).
#   make image                      -> build/textbridge-<version>-synapse-arm64.img.xz (+ .sha256
#                                      and a Raspberry Pi Imager repository JSON): Synapse inside,
#                                      the flavour `make image-test` proves
#   make image HOMESERVER=tuwunel   -> build/textbridge-<version>-tuwunel-arm64.img.xz, Tuwunel
#                                      pinned in image/recipe.conf; TUWUNEL_DEB=/path/to/the.deb
#                                      and TUWUNEL_SHA256=... to use a local, checked package
#   make image-test                 -> builds the Synapse image (or reuses the build with the
#                                      same inputs) and boots it under qemu-system-aarch64
# Needs root (mmdebstrap --mode=root, chroot) and binfmt_misc for arm64 (qemu-user-static).
# Every build logs to build/logs/.

HOMESERVER ?= synapse
IMAGE_TEST_HOMESERVER ?= synapse
IMAGE_VARS = HOMESERVER=$(HOMESERVER) $(if $(TUWUNEL_DEB),TUWUNEL_DEB=$(TUWUNEL_DEB)) $(if $(TUWUNEL_SHA256),TUWUNEL_SHA256=$(TUWUNEL_SHA256)) $(if $(IMAGE_BASE_URL),IMAGE_BASE_URL=$(IMAGE_BASE_URL))

.PHONY: image image-test

# The preflight runs first, before any package is installed: a Tuwunel build that cannot get
# a verified package stops in seconds with one message, not an hour into the build.
image:
	@$(IMAGE_VARS) image/build.sh preflight
	@scripts/install-deps base image
	@mkdir -p build/logs
	@log=build/logs/image-$(HOMESERVER)-$$(date -u +%Y%m%dT%H%M%SZ).log; \
	  echo "image: logging to $$log"; \
	  { $(IMAGE_VARS) image/build.sh all; echo $$? > build/logs/.image-rc; } 2>&1 | tee "$$log"; \
	  exit $$(cat build/logs/.image-rc)

image-test: deps-image deps-test venv
	@$(MAKE) --no-print-directory image HOMESERVER=$(IMAGE_TEST_HOMESERVER)
	TEXTBRIDGE_IMAGE_TEST=1 HOMESERVER=$(IMAGE_TEST_HOMESERVER) $(PY) -m pytest -m image -p no:cacheprovider tests/test_image.py $(PYTEST_ARGS)
