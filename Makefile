# Two entry points on a fresh machine (Python 3.11 + make, no AWS account, no Docker):
#   make run   - the service on http://127.0.0.1:$(PORT) backed by moto on loopback
#   make test  - everything: ruff, cfn-lint, the import contracts, mypy, the security checks, the whole suite
# and the inner loop while you work (under a minute once the virtualenv exists):
#   make check - ruff, the import contracts, mypy, and the unit and contract tests but the slow ones
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 3000
EVENT ?= events/customer.subscription.updated.json
# One pytest worker per core for the unit and contract tests. Each file runs on one worker (module
# fixtures such as a local stack start once, a file's own paths are its own), in collection order:
# conftest puts the slow first. The whole suite takes one worker more than there are cores: a third
# of its time is spent waiting (local HTTP servers, subprocesses, sleeps), which the extra worker
# fills (on 2 cores, 376 s with 2 workers, 330 s with 3).
WORKERS ?= auto
SUITE_WORKERS ?= $(shell $(PYTHON) -c "import os; print((os.cpu_count() or 1) + 1)")
DIST = --dist loadfile --no-loadscope-reorder
XDIST = -n $(WORKERS) $(DIST)

.PHONY: venv test check style lint imports types quick suite security run send bench chaos alert-test report first-day demo clean

$(VENV)/.installed: requirements/dev.txt layers/shared/requirements.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

venv: $(VENV)/.installed

style: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lint: style
	$(VENV)/bin/cfn-lint template.yaml

# The contracts between the package's domains ([tool.importlinter] in pyproject.toml).
imports: venv
	PYTHONPATH=layers/shared $(VENV)/bin/lint-imports

# What it checks is [tool.mypy] in pyproject.toml; its cache (.mypy_cache) keeps a rerun to seconds.
types: venv
	$(VENV)/bin/mypy

quick: venv
	$(PY) -m pytest $(XDIST) -m "not slow" tests/unit tests/contract

# Every part runs even when one fails, so one run shows everything there is to fix.
check: venv
	@$(MAKE) --no-print-directory --keep-going style imports types quick

suite: venv browser
	$(PY) -m pytest -n $(SUITE_WORKERS) $(DIST)

# On a fresh clone the two virtualenvs (and chromium, if missing) install side by side; then the
# type check and the security checks run beside lint and the suite, their output shown when they end.
test:
	@$(MAKE) --no-print-directory -j3 --output-sync=target venv $(SECURITY_VENV)/.installed browser
	@mkdir -p test-artifacts
	@$(MAKE) --no-print-directory types security > test-artifacts/beside.log 2>&1 & beside=$$!; \
	$(MAKE) --no-print-directory lint imports suite; status=$$?; \
	wait $$beside; beside_status=$$?; echo "--- make types security, beside the suite:"; \
	cat test-artifacts/beside.log; [ $$status -eq 0 ] && [ $$beside_status -eq 0 ]

# checkov pins an older boto3 than the dev tooling, so it gets its own virtualenv, like aws-sam-cli.
SECURITY_VENV := .venv-security
# The project's own code; tests are left out (they hold throwaway secrets and asserts by design).
BANDIT_PATHS := layers/shared/billwatch functions devtools bench clients/python/src

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
	$(LOCAL_SECRET) PORT=$(PORT) $(PY) -m devtools.emulator

# Dates the event now and signs it with the secret `make run` uses; a refused signature names the variable.
send: venv
	$(LOCAL_SECRET) $(PY) -m devtools.send_event $(EVENT) --url http://127.0.0.1:$(PORT)/webhooks/stripe

bench: venv
	$(PY) -m bench

# The chaos replay bigger than make test's 150 customers, with its report: CUSTOMERS=, SEED=.
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

# ScholarLink's first-day checklist (docs/first-day.md) over the last hour (MINUTES=): STACK=<deployed
# stack>, or the stack of `make run` with MOTO=<the moto endpoint its banner prints>.
first-day: venv
	$(PY) -m devtools.first_day $(if $(STACK),--stack $(STACK),--local http://127.0.0.1:$(PORT) $(if $(MOTO),--moto $(MOTO))) \
	  $(if $(MINUTES),--minutes $(MINUTES))

# A day of Stripe traffic through every function on its own local stack (HOURS=4: the same story in
# 4 hours), then what happened; the functions' logs go to a file it names.
demo: venv
	$(PY) -m devtools.demo $(if $(HOURS),--hours $(HOURS))

clean:
	rm -rf $(VENV) .venv-sam .venv-security .aws-sam .bench .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .hypothesis \
	  test-artifacts

include make/sam.mk
