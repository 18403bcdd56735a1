# The two commands of the README: `make demo` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo-data
DEMO_USERS ?= 300
DEMO_DAYS ?= 60
# attacks injected into the users' real histories for training, as Freeman et al. did: with the data set's few
# takeovers alone, the demo's model let a foreign `curl` sign-in with every novelty flag set through
DEMO_INJECT ?= 500

CHROMIUM := /usr/bin/chromium
# test processes (pytest-xdist): the suite takes about half as long on two cores as in one process
TEST_WORKERS ?= 2

.PHONY: demo test install clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

RG := RISKGATE_DB=$(DEMO_DIR)/riskgate.duckdb $(BIN)/riskgate

# The whole pipeline on the embedded defaults: synthetic population, bundled GeoIP, a DuckDB file.
demo: $(STAMP)
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(RG) synth --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed 7 --out $(DEMO_DIR)/events.jsonl.gz
	$(RG) ingest $(DEMO_DIR)/events.jsonl.gz
	$(RG) users load $(DEMO_DIR)/events.users.json
	$(RG) labels load $(DEMO_DIR)/events.labels.csv
	$(RG) train --inject-attacks $(DEMO_INJECT)
	$(RG) score
	$(RG) summary
	$(RG) report

# The dashboard's browser test drives Debian's chromium (Playwright never downloads a browser here):
# installed when missing and this is a root shell with apt-get; otherwise that one test is skipped (fails in CI).
browser:
	@test -x $(CHROMIUM) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	  else echo "note: $(CHROMIUM) is missing (apt-get install chromium): the dashboard's browser test is skipped"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
