# The two commands of the README. Each installs what is missing first (scripts/setup).
.PHONY: demo tour test setup bench bench-quick ci

setup:
	@scripts/setup

## The main job: a 3-node BEAM cluster started, crashed, restarted and stopped by Tether.
demo: setup
	mix run examples/cluster.exs

## A tour of the core API with plain processes.
tour: setup
	mix run examples/tour.exs

## Every test: cargo tests of the native core, then ExUnit with real processes.
test: setup
	cargo test --workspace
	mix test --include slow_cluster --include stress --include scale

## The benchmark suite (writes bench/RESULTS.md; `make bench-quick` for a short pass).
bench: setup
	MIX_ENV=prod mix run bench/run.exs

bench-quick: setup
	MIX_ENV=prod mix run bench/run.exs --quick

## What CI runs (format, lint, warnings, tests).
ci:
	bash .ci/run
