# Everyday commands. `make quickstart` and `make test` set up .venv first when it is missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
LOWEST := .venv-lowest
# Test processes (pytest-xdist): one per core; each test process runs torch on one thread
# (tests/conftest.py), and a test file stays in one process so its module fixtures train once.
TEST_WORKERS ?= auto

.PHONY: install quickstart test test-lowest lint docs multi30k clean

$(BIN)/minitx:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install '$(TORCH)'
	$(BIN)/pip install -e '.[dev,browser,export,hf,serve,sweep]'

install:
	rm -f $(BIN)/minitx
	$(MAKE) $(BIN)/minitx TORCH='$(TORCH)'

quickstart: $(BIN)/minitx
	$(BIN)/minitx train configs/quickstart.yaml --fresh --yes
	$(BIN)/minitx eval runs/quickstart --split test
	$(BIN)/minitx translate runs/quickstart "three hundred forty two" "seventy one thousand five hundred six"

lint: $(BIN)/minitx
	$(BIN)/ruff check minitx tests scripts
	$(BIN)/ruff format --check minitx tests scripts

test: $(BIN)/minitx lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# The lowest versions that pyproject.toml allows (torch stays at $(TORCH)), in a venv of their own
# made anew each time, then the CLI and bad-input tests: CI proves the declared minimums this way.
test-lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/pip install --quiet --upgrade pip
	$(LOWEST)/bin/python scripts/lowest_versions.py constraints --torch '$(TORCH)' > $(LOWEST)/constraints.txt
	cat $(LOWEST)/constraints.txt
	$(LOWEST)/bin/pip install --quiet '$(TORCH)'
	$(LOWEST)/bin/pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev]'
	$(LOWEST)/bin/python scripts/lowest_versions.py check
	$(LOWEST)/bin/pytest tests/test_cli.py tests/test_bad_input.py

# docs/config.md from the config dataclasses (tests/test_docs.py checks it is up to date)
docs: $(BIN)/minitx
	$(BIN)/python scripts/config_doc.py

multi30k: $(BIN)/minitx
	bash scripts/multi30k.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache
