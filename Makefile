# The two commands of the README: `make demo` (install, precompute the embedded organisms (TinyVision and both TinyLMs), serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ATLAS ?= atlas
PORT ?= 8000
INSTALLED := $(VENV)/.installed

.PHONY: install demo test bench browser clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[precompute,test]'
	touch $@

demo: install
	$(BIN)/atlascope demo --atlas $(ATLAS) --port $(PORT)

# Browser tests need Chromium; install Debian's where we can (root with apt), otherwise they skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "chromium not installed: browser tests will be skipped"

test: install browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20  # a worker a core; a module's tests together

bench: install
	$(BIN)/python bench/featvis_batching.py
	$(BIN)/python bench/demo_precompute.py

clean:
	rm -rf $(VENV) $(ATLAS)
