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
# SeaweedFS, the S3-compatible server the archive's tests run against. Its
# module publishes no semantic versions, so this is the proxy's pseudo-version
# of a 4.x release; `go install mod@version` refuses it (its go.mod has replace
# directives), so the target downloads the module and builds weed in place.
WEED     := $(TOOLS)/weed
SEAWEEDFS_VERSION := v0.0.0-20261109003541-7506e5f91cd6
# DuckDB for Node, from tests/e2e/duckdb/package-lock.json: the end-to-end
# test reads the Parquet archive with it.
DUCKDB_DEPS := tests/e2e/duckdb/node_modules/.package-lock.json
PKGS     := ./...
LINKS_ROLLUP ?= uniques: campaign
# make test must stay under 10 minutes on 2 cores; the race detector is on.
TEST_TIMEOUT ?= 15m

export TALLY_INFLUXD := $(INFLUXD)
export TALLY_WEED := $(WEED)

# Labelled anomaly series (../shared/data/anomaly beside the repository) and
# the scorer two levels above them; make anomaly-eval and the anomaly
# benchmark skip, saying so, when they are absent.
TALLY_ANOMALY_DATA ?= $(abspath $(CURDIR)/../shared/data/anomaly)
export TALLY_ANOMALY_DATA

.PHONY: help build test test-short test-deps node-deps demo bench anomaly-eval alerts-e2e chaos links attack fuzz lint fmt tidy-check dashboard certs influxdb seaweedfs duckdb archive-s3 clean release package dashboards-json

# Release builds: VERSION from the latest v* tag (without the v), else
# 0.0.0+git.<commit>; stamped into the binaries with the commit and its
# time (internal/buildinfo) and used as the package version.
VERSION  ?= $(or $(patsubst v%,%,$(shell git describe --tags --match 'v[0-9]*' 2>/dev/null)),0.0.0+git.$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell git log -1 --format=%cI 2>/dev/null)
# Evaluate once: a commit made while `make package` runs must not give the
# tarballs and the packages different versions.
VERSION  := $(VERSION)
REVISION := $(REVISION)
BUILD_DATE := $(BUILD_DATE)
RELEASE_ARCHES := amd64 arm64
DIST     := dist
BUILDINFO := github.com/tally-edge/tally/internal/buildinfo
RELEASE_LDFLAGS := -s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).revision=$(REVISION) -X $(BUILDINFO).date=$(BUILD_DATE)
NFPM     := $(TOOLS)/nfpm

# Debian packages that tests drive for real (nginx, chromium, prometheus and
# promtool, systemd-analyze, prometheus-alertmanager; curl and ip for the
# README's own commands in tests/readme) and that the benchmarks compare
# against (goaccess). Installed with apt-get when absent.
DEB_PACKAGES := nginx chromium goaccess prometheus systemd prometheus-alertmanager curl iproute2

help: ## Show the verbs.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: dashboard ## Build tally-agent, tally-aggregator and tally-demo into bin/.
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./agent/cmd/tally-agent ./aggregator/cmd/tally-aggregator ./deploy/demo/tally-demo

influxdb: $(INFLUXD) ## Install InfluxDB v1.8.10 into .bin/ (tests and demo use it) and say how to start it for your own use.
	@echo "InfluxDB $(INFLUXDB_VERSION) is in .bin/influxd. To run it for your own use, as it ships, on 127.0.0.1:8086 with its files in ./state/influxdb:"
	@echo "  .bin/influxd run -config deploy/influxdb/influxdb.conf"

$(INFLUXD):
	@echo "installing influxd $(INFLUXDB_VERSION) into $(TOOLS) (builds from source, about 90 s)"
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS=-mod=mod $(GO) install github.com/influxdata/influxdb/cmd/influxd@$(INFLUXDB_VERSION)

seaweedfs: $(WEED) ## Build SeaweedFS (weed, the archive tests' S3 server) into .bin/ from the Go module proxy.

$(WEED):
	@echo "building weed (SeaweedFS $(SEAWEEDFS_VERSION)) into $(TOOLS) (from source: several minutes the first time)"
	@mkdir -p $(TOOLS)
	dir=$$(GOFLAGS=-mod=mod $(GO) mod download -json github.com/seaweedfs/seaweedfs@$(SEAWEEDFS_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  test -n "$$dir" && GOFLAGS=-mod=mod $(GO) build -C "$$dir" -trimpath -ldflags '-s -w' -o $(WEED) ./weed

# make test runs the archive's S3 tests against an in-process gofakes3
# server (building weed costs about ten CPU-minutes, half of make test's
# budget on two cores); this target builds weed and runs them against
# SeaweedFS as a separate process, a missing binary failing them.
archive-s3: dashboard influxdb seaweedfs duckdb ## The archive's S3 tests against a real SeaweedFS (builds it first: several minutes).
	TALLY_REQUIRE_WEED=1 $(GO) test -race -count=1 -timeout 20m -v -run 'TestStoreContract|TestArchiveWithRealParts|TestScheduledExportOnACluster' ./aggregator/archive/
	TALLY_REQUIRE_WEED=1 $(GO) test -race -count=1 -timeout 20m -v -run 'TestArchive' ./tests/e2e/

duckdb: $(DUCKDB_DEPS) ## Install DuckDB for Node (npm ci from tests/e2e/duckdb/package-lock.json); the archive test reads Parquet with it.

$(DUCKDB_DEPS): tests/e2e/duckdb/package.json tests/e2e/duckdb/package-lock.json | node-deps
	cd tests/e2e/duckdb && npm ci --no-audit --no-fund

test: dashboard influxdb duckdb test-deps lint ## The whole suite: vet, gofmt, tidy check, race-detected unit, integration, e2e, browser and deployment tests.
	cd dashboard && npm test --silent
	TALLY_REQUIRE_BROWSER=1 TALLY_REQUIRE_NGINX=1 TALLY_REQUIRE_OPS_TOOLS=1 TALLY_PACKAGE_INSTALL_TEST=1 TALLY_REQUIRE_ALERTMANAGER=1 \
	  TALLY_REQUIRE_README=1 $(GO) test -race -timeout $(TEST_TIMEOUT) -count=1 $(PKGS)
	cd deploy/tools && $(GO) test -count=1 ./...

test-deps: ## Install the Debian packages the tests drive (nginx, chromium, goaccess, prometheus, systemd, prometheus-alertmanager, curl, iproute2) when absent.
	@missing=""; \
	  command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing="$$missing iproute2"; \
	  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  command -v goaccess >/dev/null 2>&1 || missing="$$missing goaccess"; \
	  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	  command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
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

anomaly-eval: ## Replay every labelled anomaly series through tally-aggregator anomaly-eval and score the alerts.
	@if [ ! -f "$(TALLY_ANOMALY_DATA)/windows.json" ]; then \
	  echo "anomaly-eval: skipped, no labelled series at $(TALLY_ANOMALY_DATA) (set TALLY_ANOMALY_DATA)"; exit 0; fi; \
	mkdir -p $(BIN); $(GO) build -trimpath -o $(BIN)/ ./aggregator/cmd/tally-aggregator; \
	out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	for f in "$(TALLY_ANOMALY_DATA)"/series/*/*.csv; do \
	  rel=$${f#"$(TALLY_ANOMALY_DATA)/series/"}; mkdir -p "$$out/$$(dirname "$$rel")"; \
	  $(BIN)/tally-aggregator anomaly-eval -csv "$$f" > "$$out/$${rel%.csv}.jsonl"; done; \
	$(GO) run "$(TALLY_ANOMALY_DATA)/../../tools/anomaly-score/main.go" -windows "$(TALLY_ANOMALY_DATA)/windows.json" -alerts "$$out"

alerts-e2e: dashboard influxdb test-deps ## Alerting end to end on real processes (about an hour): a rule, a budget and a silence; tracking breaking on one node; a three-node cluster with three weeks of seasonal history, a quiet live period, then a spike, a drop and broken tracking, the owner SIGKILLed mid-anomaly (after its alerts, and before them).
	TALLY_ALERTS_E2E=1 TALLY_REQUIRE_ALERTMANAGER=1 TALLY_REQUIRE_BROWSER=1 $(GO) test -race -count=1 -timeout 90m -v ./tests/alerts/

chaos: influxdb ## The cluster fault-injection suite at full length (60 s partition, 30 s InfluxDB outage).
	TALLY_CHAOS=long $(GO) test -count=1 -timeout 30m -run 'TestClusterChaos' -v ./tests/e2e/

links: influxdb ## An agent behind emulated thin, lossy links at full length (TALLY_LINKS=long): 250,000 events live over 4 minutes at 64 kbit/s-300 ms-10 % and 256 kbit/s-150 ms-3 %, and a 5-minute cut mid-burst; prints time to exact and bytes on the link (RESULT lines). LINKS_ROLLUP sets the agent's rollup (default uniques: campaign, the low-bandwidth setting).
	TALLY_LINKS=long TALLY_LINKS_ROLLUP='$(LINKS_ROLLUP)' $(GO) test -count=1 -timeout 40m -run 'TestBurstOverSlowLinks|TestCutMidBurst' -v ./tests/links/ | grep -E 'RESULT|^(---|===|ok|FAIL|PASS)|links_test'

attack: dashboard influxdb test-deps ## The adversarial suites at full length (TALLY_ATTACK=long): every attack mixed with legitimate traffic for minutes, then exactness checked.
	TALLY_ATTACK=long TALLY_REQUIRE_BROWSER=1 $(GO) test -count=1 -timeout 40m -v ./tests/attack/...

fuzz: ## Run every fuzzer of every package (found by their Fuzz functions) for FUZZTIME each (default 30s).
	@pkgs=$$(git ls-files '*_test.go' | xargs grep -lE '^func Fuzz[A-Za-z0-9_]+\(' | xargs -n1 dirname | sort -u); \
	  if [ -z "$$pkgs" ]; then echo "no fuzzers found"; exit 1; fi; \
	  for pkg in $$pkgs; do \
	    for f in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]+' $$pkg/*_test.go | sed 's/func //' | sort -u); do \
	      echo "== ./$$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$${FUZZTIME:-30s} -fuzzminimizetime=3s ./$$pkg; done; done

lint: fmt-check tidy-check ## go vet, gofmt and go.mod tidiness (the main module and deploy/tools).
	$(GO) vet $(PKGS)
	cd deploy/tools && $(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

tidy-check:
	@for m in . deploy/tools; do \
	  cp $$m/go.mod /tmp/tally-go.mod.bak; cp $$m/go.sum /tmp/tally-go.sum.bak; \
	  (cd $$m && $(GO) mod tidy); \
	  if ! diff -q $$m/go.mod /tmp/tally-go.mod.bak >/dev/null || ! diff -q $$m/go.sum /tmp/tally-go.sum.bak >/dev/null; then \
	    echo "$$m: go.mod/go.sum are not tidy (run go mod tidy there and commit)"; diff $$m/go.mod /tmp/tally-go.mod.bak || true; exit 1; fi; \
	done

certs: build ## Create a dev CA and certificates in .demo/certs.
	$(BIN)/tally-aggregator certs -dir .demo/certs -agents agent-eu,agent-us -aggregators agg-1,agg-2,agg-3

release: dashboard ## Build static linux/amd64 and linux/arm64 binaries with version information into dist/ (tarballs and SHA256SUMS).
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@for arch in $(RELEASE_ARCHES); do \
	  echo "building $(VERSION) linux/$$arch"; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags "$(RELEASE_LDFLAGS)" \
	    -o $(DIST)/linux-$$arch/ ./agent/cmd/tally-agent ./aggregator/cmd/tally-aggregator; \
	  tar -C $(DIST)/linux-$$arch -czf $(DIST)/tally-$(VERSION)-linux-$$arch.tar.gz tally-agent tally-aggregator; \
	done
	cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS

$(NFPM): deploy/tools/go.mod deploy/tools/go.sum
	@mkdir -p $(TOOLS)
	$(GO) -C deploy/tools build -o $(NFPM) github.com/goreleaser/nfpm/v2/cmd/nfpm

package: release $(NFPM) ## Build .deb and .rpm packages (nfpm) for both architectures into dist/.
	@for arch in $(RELEASE_ARCHES); do \
	  sed "s|\$${BIN_DIR}|$(DIST)/linux-$$arch|" deploy/packaging/nfpm.yaml > $(DIST)/nfpm-$$arch.yaml; \
	  for fmt in deb rpm; do \
	    VERSION="$(VERSION)" ARCH=$$arch $(NFPM) package -f $(DIST)/nfpm-$$arch.yaml -p $$fmt -t $(DIST)/; \
	  done; rm $(DIST)/nfpm-$$arch.yaml; \
	done
	cd $(DIST) && sha256sum *.tar.gz *.deb *.rpm > SHA256SUMS

dashboards-json: ## Regenerate the Grafana dashboards JSON from deploy/tools/grafana.
	cd deploy/tools && $(GO) run ./cmd/gen-dashboards -out ../grafana/dashboards

clean: ## Remove build output and demo state (keeps .bin/influxd and .bin/weed).
	rm -rf $(BIN) $(DIST) .demo dashboard/node_modules dashboard/static/app.js dashboard/static/app.css tests/e2e/duckdb/node_modules
