# imgsearch: `make run` (app with a demo catalog) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(or $(IMGSEARCH_DATA_DIR),./data)
PORT ?= 8501

.PHONY: install browser run test lint format typecheck demo screenshots clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install pinned dependencies

browser: ## Debian's Chromium for the end-to-end browser test (Playwright cannot download one here)
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; \
	fi

demo: install ## build and ingest the demo catalog (photos from 4 sources) when the catalog is empty
	@if [ "$$(IMGSEARCH_DATA_DIR=$(DATA_DIR) $(BIN)/imgsearch --log-level WARNING count)" = "0" ]; then \
	  IMGSEARCH_DATA_DIR=$(DATA_DIR) $(BIN)/imgsearch demo-data $(DATA_DIR)/demo && \
	  IMGSEARCH_DATA_DIR=$(DATA_DIR) IMGSEARCH_SOURCES="$$(cat $(DATA_DIR)/demo/sources.json)" \
	    $(BIN)/imgsearch ingest --quiet; \
	elif [ -d $(DATA_DIR)/demo/try-these ]; then \
	  echo "upload the files in $(DATA_DIR)/demo/try-these on the Search page"; \
	fi

run: demo ## run the app on the embedded default with the demo catalog
	IMGSEARCH_DATA_DIR=$(DATA_DIR) $(BIN)/imgsearch serve --port $(PORT)

test: install browser ## run the whole test suite
	$(BIN)/python -m pytest

screenshots: install browser ## docs/search.png and docs/catalog.png from a demo catalog in Chromium
	$(BIN)/python -m tests.screenshots docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
