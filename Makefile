# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

STAGE  ?= prod

.PHONY: demo test lint format bench package check-allowlist clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip>=24,<26.3"  # chalice 1.34 requires pip<26.3
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m chalicelib.cli demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench

# The deployable template: Chalice's functions, role, rule and API merged with infra/resources.yaml.
package: $(STAMP)
	rm -rf build/$(STAGE)
	AWS_DEFAULT_REGION=us-east-1 $(BIN)/chalice package --stage $(STAGE) --merge-template infra/resources.yaml build/$(STAGE)
	@echo "build/$(STAGE)/sam.yaml and deployment.zip: see README 'Deploy to a real account'"

check-allowlist: $(STAMP)
	$(BIN)/python -m chalicelib.cli check-allowlist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
