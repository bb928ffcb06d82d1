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

.PHONY: run build test lint bench clean venv deps screenshots install

run: build
	$(BIN)

$(TORCH_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	touch $@

venv: $(TORCH_STAMP)

# The tests read TensorBoard event files back with the real `tensorboard` package (tests/tensorboard.rs).
$(VENV)/.tensorboard: $(TORCH_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check tensorboard
	touch $@

# cargo decides what is up to date; nothing is rebuilt when nothing changed.
build: $(TORCH_STAMP)
	cargo build --release

lint: $(TORCH_STAMP)
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

# System packages the tests use (the tmux end-to-end test), from Debian when missing; gloo's
# headers (libgloo-dev): build.rs compiles the Gloo backend (CPU multi-process) only with them.
deps:
	command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux)
	test -f /usr/include/gloo/config.h || (apt-get update -qq && apt-get install -y -qq libgloo-dev)

test: $(VENV)/.tensorboard
test: $(TORCH_STAMP) deps lint
	cargo test --release --no-fail-fast

bench: build
	$(BIN) bench

# PNGs of the workbench from real runs (tmux → HTML → headless Chromium) into screenshots/.
screenshots: build
	scripts/screenshots.sh

clean:
	cargo clean

# `make install`: the binary to ~/.local/bin, completions and the man page to the per-user (XDG)
# places bash-completion, zsh, fish and man look in. PREFIX=/usr/local installs system-wide.
PREFIX ?= $(HOME)/.local
DATADIR ?= $(PREFIX)/share
install: build
	install -Dm755 $(BIN) $(PREFIX)/bin/cptlab
	install -d $(DATADIR)/bash-completion/completions $(DATADIR)/zsh/site-functions \
		$(DATADIR)/fish/vendor_completions.d $(DATADIR)/man/man1
	$(BIN) completions bash > $(DATADIR)/bash-completion/completions/cptlab.tmp
	mv $(DATADIR)/bash-completion/completions/cptlab.tmp $(DATADIR)/bash-completion/completions/cptlab
	$(BIN) completions zsh > $(DATADIR)/zsh/site-functions/_cptlab.tmp
	mv $(DATADIR)/zsh/site-functions/_cptlab.tmp $(DATADIR)/zsh/site-functions/_cptlab
	$(BIN) completions fish > $(DATADIR)/fish/vendor_completions.d/cptlab.fish.tmp
	mv $(DATADIR)/fish/vendor_completions.d/cptlab.fish.tmp $(DATADIR)/fish/vendor_completions.d/cptlab.fish
	$(BIN) man > $(DATADIR)/man/man1/cptlab.1.tmp
	mv $(DATADIR)/man/man1/cptlab.1.tmp $(DATADIR)/man/man1/cptlab.1
	@echo "zsh: add $(DATADIR)/zsh/site-functions to fpath (before compinit) if it is not there"

# `make gpu-bundle`: what a GPU machine with torch 2.11.0+cu130 but no Rust needs, in
# target/gpu-bundle (< 64 MiB): the stripped binary, scripts/gpu-check.sh and bench/. The
# script sets LD_LIBRARY_PATH to that machine's torch lib/; the binary needs the glibc recorded
# in the bundle's README (the newest GLIBC_ symbol version it references).
GPU_BUNDLE := target/gpu-bundle
.PHONY: gpu-bundle
gpu-bundle: build
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/scripts $(GPU_BUNDLE)/bench
	strip --strip-all -o $(GPU_BUNDLE)/cptlab $(BIN)
	cp scripts/gpu-check.sh $(GPU_BUNDLE)/scripts/
	cp bench/torch_reference.py bench/torch_reference_gpu.py $(GPU_BUNDLE)/bench/
	{ echo "cptlab GPU bundle ($$(git describe --always --dirty 2>/dev/null || echo unknown), built $$(date -u +%F))"; \
	  echo "Run: scripts/gpu-check.sh   (PYTHON=... for a Python with torch 2.11.0+cu130; writes gpu-report.md)"; \
	  echo "Needs glibc >= $$(objdump -T $(GPU_BUNDLE)/cptlab | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 | cut -d_ -f2) (built on $$(ldd --version | head -1))"; \
	} > $(GPU_BUNDLE)/README
	@size=$$(du -sm $(GPU_BUNDLE) | cut -f1); echo "$(GPU_BUNDLE): $${size} MiB"; \
	  test $$size -lt 64 || { echo "gpu-bundle: $${size} MiB is over 64 MiB" >&2; exit 1; }

# `make reproduce`: the small-scale reproduction sweeps of the papers' claims on real CIFAR-10
# (docs/reproduction/*.toml, about half an hour on 2 CPU cores; runs in target/reproduce/,
# resumable) and docs/REPRODUCTION.md regenerated from `cptlab compare`'s tables and plots.
.PHONY: reproduce
reproduce: build
	scripts/reproduce.sh
