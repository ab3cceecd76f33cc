# One entry point. `make test` and `make demo` set up what they need on first use.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup venv docker images lint test sanity molecule demo demo-destroy docs bench bench-deploy clean

help:
	@echo "make setup   - venv (.venv), Docker engine, locally built test images"
	@echo "make lint    - yamllint + ansible-lint (production profile)"
	@echo "make test    - every test: lint, role metadata, all molecule scenarios (pytest)"
	@echo "make sanity  - ansible-test sanity and units on the built and installed collection"
	@echo "make molecule SCENARIO=name - one molecule scenario"
	@echo "make demo    - the whole product locally: AWS emulator + containers as hosts"
	@echo "make docs    - regenerate the role READMEs' variable tables from meta/argument_specs.yml"
	@echo "make bench   - issue 10's benchmark on a stack of its own (bench/README.md; BENCH_ARGS=...)"
	@echo "make bench-deploy - deploy times of site.yml on the demo stack (replaces a running demo)"

venv:
	@scripts/setup-venv.sh

docker:
	@scripts/ensure-docker.sh

images: docker
	@scripts/build-test-images.sh

setup: venv images

lint: venv
	yamllint --strict .
	ansible-lint

test: venv
	pytest

sanity: venv
	pytest tests/test_sanity.py

molecule: setup
	molecule test -s $(SCENARIO)

demo: setup
	scripts/demo.sh up

demo-destroy: venv
	scripts/demo.sh down

docs: venv
	python scripts/role-docs.py

bench: setup
	bench/bench.sh $(BENCH_ARGS)

bench-deploy: setup
	python bench/deploy.py $(BENCH_ARGS)

clean:
	rm -rf .test-logs .pytest_cache
