# The two commands a newcomer needs: `make demo` and `make test`. Everything else is
# installed by them (a virtualenv in .venv; the testbed's Debian packages and the
# Kubernetes build are installed and cached by `slmops testbed up` itself).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck unit integration e2e bench crds manifests clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slmops demo

test: $(STAMP) lint typecheck
	$(BIN)/pytest -m "not benchmark" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pytest -m benchmark $(PYTEST_ARGS)

# The CRDs are generated from the API models; the chart's copy and manifests/install.yaml
# are derived from them (Helm never upgrades crds/, so they are regenerated together).
crds: $(STAMP)
	$(BIN)/slmops crds --write crds/
	$(BIN)/python -m slmops.testbed.chart

manifests: $(STAMP)
	$(BIN)/python -m slmops.testbed.chart

clean:
	$(BIN)/slmops testbed down || true
	rm -rf $(VENV)
