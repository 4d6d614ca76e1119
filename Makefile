# Two entry points on a fresh machine (Python 3.11 + make, no AWS account, no Docker):
#   make run   - the service on http://127.0.0.1:$(PORT) backed by moto on loopback
#   make test  - ruff, cfn-lint, the security checks and pytest
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000
EVENT ?= events/customer.subscription.updated.json

.PHONY: venv test lint security run send bench chaos alert-test report demo clean

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

# Two cores: the quota load test (2 minutes of one core) runs beside the rest of the suite, its
# output shown when it ends; the chaos replay runs last and alone, its reference on the second core.
LOAD_TEST := tests/integration/test_quota_under_load.py
CHAOS_TEST := tests/integration/test_chaos_replay.py
test: lint security browser
	@mkdir -p test-artifacts
	@$(PY) -m pytest -p no:cacheprovider $(LOAD_TEST) > test-artifacts/quota-under-load.log 2>&1 & load=$$!; \
	$(PY) -m pytest --ignore=$(LOAD_TEST) --ignore=$(CHAOS_TEST); suite=$$?; \
	wait $$load; load_status=$$?; echo "--- $(LOAD_TEST), beside it:"; cat test-artifacts/quota-under-load.log; \
	[ $$suite -eq 0 ] && [ $$load_status -eq 0 ]
	$(PY) -m pytest $(CHAOS_TEST)

# checkov pins an older boto3 than the dev tooling, so it gets its own virtualenv, like aws-sam-cli.
SECURITY_VENV := .venv-security
# The project's own code; tests are left out (they hold throwaway secrets and asserts by design).
BANDIT_PATHS := layers/shared/billwatch functions devtools bench

$(SECURITY_VENV)/.installed: requirements/security.txt
	$(PYTHON) -m venv $(SECURITY_VENV)
	@# What venv itself does from Python 3.13 on: keeps git, and so ruff, out of the virtualenv.
	echo '*' > $(SECURITY_VENV)/.gitignore
	$(SECURITY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SECURITY_VENV)/bin/python -m pip install --quiet -r requirements/security.txt
	touch $@

# bandit fails on high severity (lower ones carry a justified `# nosec` where they are false);
# checkov has no severities offline, so every failed check fails (justified skips sit on the
# resources in template.yaml); the pins are audited exactly as locked, against PyPI's advisories.
security: venv $(SECURITY_VENV)/.installed
	$(VENV)/bin/bandit --quiet --recursive --severity-level high $(BANDIT_PATHS)
	$(SECURITY_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation --file template.yaml
	$(PY) -m tests.security.audit_pins requirements/constraints.txt layers/shared/requirements.txt

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

# Dates the event now and signs it with the secret `make run` uses; a refused signature names the variable.
send: venv
	$(LOCAL_SECRET) $(PY) -m devtools.send_event $(EVENT) --url http://127.0.0.1:$(PORT)/webhooks/stripe

bench: venv
	$(PY) -m bench

# The chaos replay bigger than make test's 500 customers, with its report: CUSTOMERS=, SEED=.
CUSTOMERS ?= 2000
chaos: venv
	CHAOS_CUSTOMERS=$(CUSTOMERS) $(if $(SEED),CHAOS_SEED=$(SEED)) \
	  $(PY) -m pytest -p no:cacheprovider -s tests/integration/test_chaos_replay.py

# A test alert of each severity through the routes: here on moto (log channels), or
# `make alert-test FUNCTION=<deployed AlertDispatch function>` through the real ones.
alert-test: venv
	$(PY) -m devtools.alerts test $(if $(FUNCTION),--function $(FUNCTION))

# The billing report of the last 24 hours (PERIOD=weekly: 7 days) from what `make run` has seen.
report: venv
	$(PY) -m devtools.report --url http://127.0.0.1:$(PORT) $(if $(PERIOD),--period $(PERIOD))

# A day of Stripe traffic through every function on its own local stack (HOURS=4: the same story in
# 4 hours), then what happened; the functions' logs go to a file it names.
demo: venv
	$(PY) -m devtools.demo $(if $(HOURS),--hours $(HOURS))

clean:
	rm -rf $(VENV) .venv-sam .venv-security .aws-sam .bench .pytest_cache .ruff_cache .hypothesis test-artifacts

include make/sam.mk
