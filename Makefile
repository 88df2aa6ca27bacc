# podkit: `make run` runs the classic two-container pod, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := iproute2 curl procps util-linux
MANIFEST ?= examples/pod-definition.yaml

.PHONY: run test test-all bench lint debs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian packages the runtime and the tests use; installed only when missing.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(STAMP) debs
	$(BIN)/podkit run $(MANIFEST)

# Soak tests marked `slow` are skipped unless SLOW=1.
test: $(STAMP) debs
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS)

bench: $(STAMP) debs
	$(BIN)/python bench/pod_startup.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) build src/*.egg-info
