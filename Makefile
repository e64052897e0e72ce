# enilab: `make demo` sets everything up and runs the main job; `make test` sets up and runs every test.
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
JOBS    ?= auto

.PHONY: setup demo labs test lint bench chaos fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml ci/setup.sh
	bash ci/setup.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(BIN)/enilab demo

# the labs in JupyterLab, as yourself (the labs' kernel builds namespaces rootless) or as root
labs: setup
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) labs/

test: setup
	bash ci/test.sh $(VENV) $(JOBS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/enilab bench sim

# nightly-style: the full chaos run and a long fuzz (CI runs shorter ones inside `make test`)
chaos: setup
	$(BIN)/enilab chaos --iterations 200

# random exploration of every property test (`make test` runs them derandomized: the same examples each time)
fuzz: setup
	ENILAB_HYPOTHESIS_PROFILE=fuzz ENILAB_FUZZ_EXAMPLES=20000 $(BIN)/pytest -q -n $(JOBS) -m hypothesis tests

clean:
	-$(BIN)/enilab clean
	rm -rf $(VENV) .pytest_cache build *.egg-info
