# dlstream developer commands. `make help` lists them.
SHELL := /bin/bash
VENV  := .venv/bin
# lint-imports reads the namespace from the two source roots, not from the editable install's finder.
IMPORTS := PYTHONPATH=services:pipelines $(VENV)/lint-imports

.DEFAULT_GOAL := help
.PHONY: help setup models up demo down status bench docs lint layers sizes check typecheck unit deploy-check integration k8s test

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## install apt packages, the venv, the Kafka jars and the CRD schema packages (idempotent)
	@scripts/setup.sh

models: setup ## build the models that are not built yet (all four from nothing: about 5 minutes; restored from the build cache when their inputs are unchanged)
	$(VENV)/dlstream models build

up: models ## the main job: build missing models, start Kafka, Redis, Triton and a worker, stream a demo set
	$(VENV)/dlstream stack up
	$(VENV)/dlstream demo

demo: ## stream held-out samples of every modality through the running stack and show the predictions
	$(VENV)/dlstream demo

bench: ## benchmarks on the running stack: pipeline vs direct Triton vs a naive agent; drift monitor alarms and cost
	$(VENV)/dlstream bench stream
	$(VENV)/dlstream bench drift

down: ## stop every process of the local stack
	$(VENV)/dlstream stack down

status: ## show the local stack's processes and health
	$(VENV)/dlstream stack status

docs: setup ## regenerate the README's configuration table and the prediction schemas (docs/schemas/)
	$(VENV)/python scripts/update_readme_config.py
	$(VENV)/python scripts/write_prediction_schemas.py

lint: setup ## ruff lint and format check, and the import contracts between the layers
	$(VENV)/ruff check services pipelines tests scripts setup.py
	$(VENV)/ruff format --check services pipelines tests scripts setup.py
	$(IMPORTS)

layers: setup ## lines per subpackage and the imports between subpackages (what the import contracts check)
	PYTHONPATH=services:pipelines $(VENV)/python scripts/layers.py

sizes: setup ## install each role's set (client, worker, monitor, models) into a fresh venv and print its size
	$(VENV)/python scripts/install_sizes.py

typecheck: setup ## mypy (strict)
	$(VENV)/mypy

check: setup ## the quick tier before a commit: lint, format, import contracts, types and unit tests; no services
	$(VENV)/ruff check services pipelines tests scripts setup.py
	$(VENV)/ruff format --check services pipelines tests scripts setup.py
	$(IMPORTS)
	$(VENV)/mypy
	$(VENV)/pytest -q tests/unit

unit: setup ## unit tests (pure logic, no services)
	$(VENV)/pytest tests/unit

deploy-check: setup ## render k8s/ overlays and validate them and docker-compose.yml against their schemas
	$(VENV)/pytest tests/deploy

integration: models ## integration tests against a real stack started on free ports
	$(VENV)/pytest tests/integration

k8s: setup ## the manifests against a local Kubernetes control plane (binaries built once into ~/.cache)
	@# Binaries and images are built here, outside pytest's per-test timeout (7 to 18 minutes cold on 2 cores).
	$(VENV)/python -m tests.k8s.cluster build
	$(VENV)/pytest tests/k8s

test: setup ## everything CI runs: lint, types, unit, deployment, Kubernetes and integration tests
	$(VENV)/ruff check services pipelines tests scripts setup.py
	$(VENV)/ruff format --check services pipelines tests scripts setup.py
	$(IMPORTS)
	$(VENV)/mypy
	@# Missing models are built here, outside pytest's per-test timeout, which a busy machine would exceed.
	$(VENV)/dlstream models build
	$(VENV)/python -m tests.k8s.cluster build
	$(VENV)/pytest tests/unit tests/deploy tests/k8s tests/integration
