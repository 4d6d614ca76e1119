# AWS SAM targets (included from the top-level Makefile).
#
# aws-sam-cli pins an older boto3 than the dev tooling, so it gets its own
# virtualenv (.venv-sam) built from requirements/sam.txt. Nothing here needs
# Docker: every function and the layer use `BuildMethod: makefile`.
#
#   make build     - sam build (function + layer) into .aws-sam/build
#   make validate  - sam validate --lint
#   make layer     - only the SharedLayer, into $(LAYER_DIR) (used by the benchmark)
PYTHON ?= python3
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam
SAM_TEMPLATE ?= template.yaml
SAM_BUILD_FLAGS ?=
LAYER_DIR ?= .aws-sam/layer-local
# sam validate only needs a region, never credentials.
SAM_REGION ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION),us-east-1)
# sam runs `make` itself for BuildMethod: makefile; do not leak this make's
# command-line variables / jobserver into those nested builds.
SAM_ENV := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL SAM_CLI_TELEMETRY=0

.PHONY: sam-venv build validate layer

$(SAM_VENV)/.installed: requirements/sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements/sam.txt
	touch $@

sam-venv: $(SAM_VENV)/.installed

build: sam-venv
	$(SAM_ENV) $(SAM) build --template-file $(SAM_TEMPLATE) $(SAM_BUILD_FLAGS)

validate: sam-venv
	$(SAM_ENV) AWS_DEFAULT_REGION=$(SAM_REGION) $(SAM) validate --lint --template-file $(SAM_TEMPLATE)

# Same recipe sam build runs for SharedLayer, without sam: lets the benchmark
# measure the unzipped layer size quickly.
layer:
	rm -rf $(LAYER_DIR)
	mkdir -p $(LAYER_DIR)
	$(MAKE) -C layers/shared build-SharedLayer ARTIFACTS_DIR=$(abspath $(LAYER_DIR)) PYTHON=$(PYTHON)
