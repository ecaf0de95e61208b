# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need
# into .venv from the pinned constraints.txt first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PORT ?= 8765
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install demo test lint lock bench ui

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo.run --port $(DEMO_PORT)

# After `make demo`: the demo's run and the TikTok audiences page in the Airflow UI (login admin/admin).
UI_PORT ?= 8080
ui: $(STAMP)
	$(BIN)/python -m demo.ui --port $(UI_PORT) --emulator-port $(DEMO_PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	scripts/ensure-test-services.sh
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/bench_prepare.py

# Re-pin after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable | grep -v '^uv==' > constraints.txt
