# make test: create .venv if missing, install the project, run the whole suite. make demo: the main job.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench lint up clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e . --group dev
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
