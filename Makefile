# factoryd developer entry points. Every target creates its own virtualenv.
#
#   make run    set up, then run the daemon on etc/factoryd.toml (Ctrl-C stops it)
#   make test   set up (venv, Debian packages, the pinned agent CLIs from npm), lint
#               (ruff, mypy --strict, import-linter contracts), test
#   make bench  run the benchmarks in bench/ and write bench/RESULTS.md
#   make man    the man page and bash/zsh completion scripts, from the parser, into build/

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= etc/factoryd.toml

.PHONY: run test lint bench man system-deps agents clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/factoryd run --config $(CONFIG)

system-deps:
	scripts/install-system-deps

agents: system-deps
	scripts/install-agents

lint: $(BIN)/.installed
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed system-deps agents lint
	$(BIN)/python -m pytest

# the man page and the completion scripts, generated from the parser, into build/
man: $(BIN)/.installed
	mkdir -p build/completions
	$(BIN)/argparse-manpage --module factoryd.cli --function build_parser --prog factoryd \
		--project-name factoryd --description "keep CLI coding agents running, routed by policy" \
		--output build/factoryd.1
	$(BIN)/factoryd completion bash > build/completions/factoryd.bash
	$(BIN)/factoryd completion zsh > build/completions/_factoryd

bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	scripts/install-bench-deps $(BIN)/python
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
