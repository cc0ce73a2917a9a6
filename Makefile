# make test: create .venv if missing, install the project, run the whole suite. make demo: the main job.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench lint up clean

# Bytecode compiled once here: uv leaves it to the first import, and with PYTHONDONTWRITEBYTECODE set every
# process (each dbt invocation, the API, the pipeline) would compile dbt and Dagster again, ~8 s per pipeline run.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e . --group dev
	$(PY) -m compileall -q -j0 $(VENV)/lib
	touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

demo: install
	$(VENV)/bin/chatmeter demo

up: install
	$(VENV)/bin/chatmeter up

bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m benchmarks.run

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dbt_project/target
