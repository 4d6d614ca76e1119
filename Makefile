# Two entry points on a fresh machine (Python 3.11 + make, no AWS account, no Docker):
#   make run   - the service on http://127.0.0.1:$(PORT) backed by moto on loopback
#   make test  - ruff, cfn-lint and pytest
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000
EVENT ?= events/customer.subscription.updated.json

.PHONY: venv test lint run send bench alert-test report demo clean

$(VENV)/.installed: requirements/dev.txt layers/shared/requirements.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint template.yaml

test: lint browser
	$(PY) -m pytest

# tests/integration/test_status_page.py loads the status page in Debian's headless chromium.
.PHONY: browser
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "the status page test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; \
	}

# The local stack and the sender share a secret: yours (from `stripe listen`) or the public dev one.
LOCAL_SECRET = STRIPE_WEBHOOK_SECRET="$${STRIPE_WEBHOOK_SECRET:-whsec_local_dev_secret}"

run: venv
	$(LOCAL_SECRET) PORT=$(PORT) $(PY) -m devtools.local_stack

send: venv
	$(LOCAL_SECRET) $(PY) -m devtools.send_event $(EVENT) --url http://127.0.0.1:$(PORT)/webhooks/stripe

bench: venv
	$(PY) -m bench

# A test alert of each severity through the routes: here on moto (log channels), or
# `make alert-test FUNCTION=<deployed AlertDispatch function>` through the real ones.
alert-test: venv
	$(PY) -m devtools.alerts test $(if $(FUNCTION),--function $(FUNCTION))

# The billing report of the last 24 hours (PERIOD=weekly: 7 days) from what `make run` has seen.
report: venv
	$(PY) -m devtools.report --url http://127.0.0.1:$(PORT) $(if $(PERIOD),--period $(PERIOD))

# A day of Stripe traffic through every function on its own local stack, then what happened.
demo: venv
	$(PY) -m devtools.demo $(if $(HOURS),--hours $(HOURS))

clean:
	rm -rf $(VENV) .venv-sam .aws-sam .bench .pytest_cache .ruff_cache .hypothesis test-artifacts

include make/sam.mk
