# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_BROWSER := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null

.PHONY: setup demo test unit clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: PyPI's build of 2.13.0 (CUDA, several GB with its nvidia packages, runs on the CPU);
	# pip caches it, so only the first setup on a machine downloads it
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[serve,stack,export,small,dev]"
	# the browser tests' headless Chromium, from Debian's packages (they skip, saying so, without it)
	command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT_BROWSER) || { apt-get update -q >/dev/null && $(APT_BROWSER); }; }; } || \
	  echo "chromium not installed: the browser tests will skip (apt-get install chromium chromium-driver)"
	touch $@

demo: setup
	$(BIN)/enrich demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the fast tier while working: unit tests without the training runs, the benchmark and the fuzz corpus
unit: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests/unit

clean:
	rm -rf $(VENV) .enrich
