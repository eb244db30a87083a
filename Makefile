# Everyday commands. `make quickstart` and `make test` set up .venv first when it is missing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint multi30k clean

$(BIN)/minitx:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install '$(TORCH)'
	$(BIN)/pip install -e '.[dev]'

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
	$(BIN)/pytest

multi30k: $(BIN)/minitx
	bash scripts/multi30k.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache
