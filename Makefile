# cptlab — `make run` opens the workbench (TUI), `make test` runs every test.
# Works on a clean clone: creates .venv with torch 2.11.0 from PyPI when it is missing.
SHELL := /bin/bash
VENV := .venv
TORCH_VERSION := 2.11.0
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
BIN := target/release/cptlab
PYTHON ?= python3

export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Where the real-data test finds CIFAR-10 (the JPEG tree beside the repository).
CPTLAB_TEST_CIFAR10 ?= $(abspath ../shared/data/cifar10-jpg.tar.gz)
export CPTLAB_TEST_CIFAR10

.PHONY: run build test lint bench clean venv deps screenshots

run: build
	$(BIN)

$(TORCH_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	touch $@

venv: $(TORCH_STAMP)

# cargo decides what is up to date; nothing is rebuilt when nothing changed.
build: $(TORCH_STAMP)
	cargo build --release

lint: $(TORCH_STAMP)
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

# System packages the tests use (the tmux end-to-end test), from Debian when missing.
deps:
	command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux)

test: $(TORCH_STAMP) deps lint
	cargo test --release --no-fail-fast

bench: build
	$(BIN) bench

# PNGs of the workbench from real runs (tmux → HTML → headless Chromium) into screenshots/.
screenshots: build
	scripts/screenshots.sh

clean:
	cargo clean
