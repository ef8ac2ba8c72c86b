# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install system-deps bench-deps lint typecheck test test-unit test-integration test-e2e demo contracts cj-evaluation bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	@# tests/support (servers, load generators, the model server) is not shipped; tests and bench import it as `support`
	@$(PY) -c 'import site, pathlib; pathlib.Path(site.getsitepackages()[0], "huleedu-test-support.pth").write_text(str(pathlib.Path("tests").resolve()) + "\n")'
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian packages the tests need, installed only when missing (needs root, as on CI): chromium for
# the browser tests, prometheus for promtool (the alerting rules of deploy/ are checked and tested).
system-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy --strict src

test: install system-deps lint typecheck
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-unit: install
	$(VENV)/bin/pytest -q -m unit

test-integration: install
	$(VENV)/bin/pytest -q -m integration

demo: install
	$(VENV)/bin/huleedu demo

contracts: install
	$(VENV)/bin/huleedu contracts export docs/contracts

# docs/cj-evaluation.md from its fixed seed (about 15 minutes on two shared cores; progress on stderr).
cj-evaluation: install
	$(VENV)/bin/huleedu cj evaluate --output docs/cj-evaluation.md

# Figures on PostgreSQL + Redis + Tansu (each script starts what it needs and cleans up after itself);
# docs/performance.md is regenerated from what they print.
bench: install bench-deps
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
