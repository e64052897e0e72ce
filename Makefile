# enilab: `make demo` sets everything up and runs the main job; `make test` sets up and runs every test.
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
JOBS    ?= auto

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml ci/setup.sh
	bash ci/setup.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(BIN)/enilab demo

test: setup
	bash ci/test.sh $(VENV) $(JOBS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/enilab bench sim

clean:
	-$(BIN)/enilab clean
	rm -rf $(VENV) .pytest_cache build *.egg-info
