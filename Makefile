# The two entry points: `make demo` and `make test`. Both create the virtual
# environment and install the project's requirements on first use.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DJANGO_SETTINGS_MODULE := recsys_platform.settings

# Tests use the local Redis as their broker (a database number of its own).
TEST_BROKER ?= redis://127.0.0.1:6379/15

.PHONY: venv demo test test-slow bench migrate clean-db

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) scripts/demo.py

test: venv
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER)} $(PY) -m pytest -m "not slow" --create-db

# pytest exits 5 when no test carries the mark; that is not a failure here.
test-slow: venv
	CELERY_BROKER_URL=$${CELERY_BROKER_URL:-$(TEST_BROKER)} $(PY) -m pytest -m slow; \
	status=$$?; if [ $$status -eq 5 ]; then exit 0; else exit $$status; fi

bench: migrate
	$(PY) bench/run_all.py

clean-db:
	rm -rf var/pgdata
