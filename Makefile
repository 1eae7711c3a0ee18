# Tally: edge collector (tally-agent) and central aggregator (tally-aggregator).
# Run `make help` for the verbs. Everything a target needs is installed by it.

SHELL       := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
BIN      := bin
TOOLS    := $(CURDIR)/.bin
INFLUXD  := $(TOOLS)/influxd
INFLUXDB_VERSION := v1.8.10
PKGS     := ./...
# make test must stay under 10 minutes on 2 cores; the race detector is on.
TEST_TIMEOUT ?= 15m

export TALLY_INFLUXD := $(INFLUXD)

.PHONY: help build test test-short test-deps node-deps demo bench chaos attack fuzz lint fmt tidy-check dashboard certs influxdb clean

# Debian packages that tests drive for real (nginx, chromium) and that the
# benchmarks compare against (goaccess). Installed with apt-get when absent.
DEB_PACKAGES := nginx chromium goaccess

help: ## Show the verbs.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: dashboard ## Build tally-agent, tally-aggregator and tally-demo into bin/.
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./agent/cmd/tally-agent ./aggregator/cmd/tally-aggregator ./deploy/demo/tally-demo

influxdb: $(INFLUXD) ## Install InfluxDB v1.8.10 into .bin/ (tests and demo use it).

$(INFLUXD):
	@echo "installing influxd $(INFLUXDB_VERSION) into $(TOOLS) (builds from source, about 90 s)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod $(GO) install github.com/influxdata/influxdb/cmd/influxd@$(INFLUXDB_VERSION)

test: dashboard influxdb test-deps lint ## The whole suite: vet, gofmt, tidy check, race-detected unit, integration, e2e and browser tests.
	cd dashboard && npm test --silent
	TALLY_REQUIRE_BROWSER=1 TALLY_REQUIRE_NGINX=1 $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 $(PKGS)

test-deps: ## Install the Debian packages the tests drive (nginx, chromium, goaccess) when absent.
	@missing=""; \
	  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  command -v goaccess >/dev/null 2>&1 || missing="$$missing goaccess"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi

# The dashboard bundle (dashboard/static/app.js, app.css) is generated:
# npm ci installs the exact versions of dashboard/package-lock.json, then
# esbuild bundles dashboard/src. Both steps rerun only when their inputs
# change. Without the bundle `go build` still works (the embedded shell
# says to run make dashboard) but the browser tests fail.
DASHBOARD_SRC := $(wildcard dashboard/src/*)
DASHBOARD_DEPS := dashboard/node_modules/.package-lock.json

dashboard: dashboard/static/app.js ## Bundle the dashboard (npm ci + esbuild) into dashboard/static/.

dashboard/static/app.js: $(DASHBOARD_DEPS) $(DASHBOARD_SRC)
	cd dashboard && npm run --silent build

$(DASHBOARD_DEPS): dashboard/package.json dashboard/package-lock.json | node-deps
	cd dashboard && npm ci --no-audit --no-fund

node-deps: ## Install Node.js and npm from Debian packages when absent (the dashboard build needs them).
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	    echo "installing Debian packages: nodejs npm"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; \
	  fi

test-short: ## Unit tests only (no InfluxDB, no e2e).
	$(GO) test -short -count=1 $(PKGS)

demo: dashboard build influxdb ## Build, start InfluxDB, three aggregator nodes, two agents and generated traffic; print the dashboard link.
	$(BIN)/tally-demo -bin $(BIN) -influxd $(INFLUXD) -dir .demo

bench: dashboard influxdb test-deps ## Benchmarks (ingest, rollup, merge, wire, end to end).
	$(GO) test -run='^$$' -bench=. -benchmem -timeout 30m ./agent/... ./aggregator/... ./wire/... ./sketch/... ./internal/... ./tests/...

chaos: influxdb ## The cluster fault-injection suite at full length (60 s partition, 30 s InfluxDB outage).
	TALLY_CHAOS=long $(GO) test -count=1 -timeout 30m -run 'TestClusterChaos' -v ./tests/e2e/

attack: influxdb ## The adversarial suites at full length (TALLY_ATTACK=long): attacks mixed with legitimate traffic for minutes, then exactness.
	TALLY_ATTACK=long $(GO) test -count=1 -timeout 30m -v ./tests/attack/...

fuzz: ## Run every fuzzer of every package (found by their Fuzz functions) for FUZZTIME each (default 30s).
	@pkgs=$$(git ls-files '*_test.go' | xargs grep -lE '^func Fuzz[A-Za-z0-9_]+\(' | xargs -n1 dirname | sort -u); \
	  if [ -z "$$pkgs" ]; then echo "no fuzzers found"; exit 1; fi; \
	  for pkg in $$pkgs; do \
	    for f in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]+' $$pkg/*_test.go | sed 's/func //' | sort -u); do \
	      echo "== ./$$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$${FUZZTIME:-30s} -fuzzminimizetime=3s ./$$pkg; done; done

lint: fmt-check tidy-check ## go vet, gofmt and go.mod tidiness.
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

tidy-check:
	@cp go.mod /tmp/tally-go.mod.bak; cp go.sum /tmp/tally-go.sum.bak; \
	  $(GO) mod tidy; \
	  if ! diff -q go.mod /tmp/tally-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/tally-go.sum.bak >/dev/null; then \
	    echo "go.mod/go.sum are not tidy (run go mod tidy and commit)"; diff go.mod /tmp/tally-go.mod.bak || true; exit 1; fi

certs: build ## Create a dev CA and certificates in .demo/certs.
	$(BIN)/tally-aggregator certs -dir .demo/certs -agents agent-eu,agent-us -aggregators agg-1,agg-2,agg-3

clean: ## Remove build output and demo state (keeps .bin/influxd).
	rm -rf $(BIN) .demo dashboard/node_modules dashboard/static/app.js dashboard/static/app.css
