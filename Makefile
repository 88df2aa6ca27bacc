# podkit: `make run` runs the classic two-container pod, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := python3 python3-venv passwd iproute2 curl procps util-linux openssl nftables libseccomp2 \
          rsyslog logrotate haproxy nginx wrk testssl.sh docker-registry skopeo umoci busybox-static \
          mmdebstrap podman runc uidmap dnsmasq-base slirp4netns
MANIFEST ?= examples/pod-definition.yaml

.PHONY: run test bench lint debs bytecode clean

# Debian packages first: on a bare Debian, `python3 -m venv` itself needs python3-venv.
$(STAMP): pyproject.toml | debs
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

# Containers start from podkit's sources: compiled bytecode saves every start the compile
# (this matters under PYTHONDONTWRITEBYTECODE, which never writes it on the fly).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src

run: $(STAMP) debs bytecode
	$(BIN)/podkit run $(MANIFEST)

# Soak tests marked `slow` are skipped unless SLOW=1.
test: $(STAMP) debs bytecode
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS)

bench: $(STAMP) debs bytecode
	$(BIN)/python bench/pod_startup.py
	$(BIN)/python bench/lifecycle.py
	$(BIN)/python bench/log_agent.py
	$(BIN)/python bench/proxy_hot_path.py
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/adapters.py
	$(BIN)/python bench/images.py
	$(BIN)/python bench/published.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/scale.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info
