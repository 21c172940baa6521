# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch: the CPU wheel from this machine's wheel folder (a plain `torch` pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q "torch==2.13.0+cpu"
	$(BIN)/python -m pip install -q -e ".[serve,stack,export,small,dev]"
	touch $@

demo: setup
	$(BIN)/enrich demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .enrich
