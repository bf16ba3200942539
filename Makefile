# breakwater — every command a user or CI needs. `make help` lists them.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/breakwater

.PHONY: help build run demo demo-fleet test vet deadcode fmt-check unit browser-deps redis-deps certs-deps chart-test image-test image docker bench bench-go fuzz chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build a static binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) .

run: build ## run with examples/quickstart.yaml
	$(BIN) -config examples/quickstart.yaml

demo: ## the main job: flaky upstream, straight vs through breakwater, side by side
	$(GO) run ./examples/demo

demo-fleet: build redis-deps ## three replicas against one quota, without and with the shared store
	$(GO) run ./examples/demo/fleet -binary $(BIN)

test: browser-deps redis-deps vet fmt-check deadcode chart-test image-test unit ## everything CI runs: vet, gofmt, dead code, chart and image checks, go test -race (unit, end-to-end)

vet:
	$(GO) vet ./...
	$(GO) vet -tags pprof .

# Production code that no main package reaches is test-only code living in
# the product: scripts/deadcode.sh lists it (golang.org/x/tools' deadcode,
# pinned, installed into bin/).
deadcode: ## fail on functions reachable from no main package
	sh scripts/deadcode.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# The suites whose requests reach an upstream run twice: on the lean
# HTTP/1.1 transport (the default for http:// upstreams) and on net/http's
# (BREAKWATER_TRANSPORT=standard, which the binary and the in-process tests
# both honour).
#
# The chart and image tests run once, in chart-test and image-test, not
# here: they drive helm and built binaries, so -race would only add a
# second compile of Kubernetes' and Prometheus's packages.
unit:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e '/charts$$' -e '/tools/image$$')
	BREAKWATER_TRANSPORT=standard $(GO) test -race -count=1 -timeout 20m . ./proxy/ ./chaos/ ./examples/mcp-inbound/

# The dashboard's browser test (dashboard/browser_test.go) drives Debian's
# chromium headless. Without root or sudo, BREAKWATER_SKIP_BROWSER=1 skips
# both this install and that test.
browser-deps: ## install Chromium for the dashboard's browser test (apt-get; sudo when not root)
	@if [ "$$BREAKWATER_SKIP_BROWSER" = 1 ] || command -v chromium >/dev/null; then exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

# The shared-state tests (store/, store_e2e_test.go) run a real redis-server
# on a free port with persistence off; Debian's package provides it.
redis-deps: ## install redis-server for the shared-state tests (apt-get; sudo when not root)
	@if command -v redis-server >/dev/null; then exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server

# CA certificates for the image (make image): Debian's bundle.
certs-deps: ## install Debian's CA certificates for make image (apt-get; sudo when not root)
	@if [ -f /etc/ssl/certs/ca-certificates.crt ]; then exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	$$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates

# Helm comes from the Go module proxy (go install, once, into the
# git-ignored bin/; see charts/helpers_test.go, helmVersion v3.22.0), so
# that a fresh machine needs only Go. The PrometheusRule is checked with
# Prometheus's rule parser as a library, and every manifest is decoded
# strictly into the k8s.io/api types.
chart-test: ## helm lint + template (default and egress values); every manifest strictly decoded into the Kubernetes API types; rendered configs pass breakwater validate; the PrometheusRule passes promtool's rule checks
	$(GO) test -count=1 -v -timeout 20m ./charts/

image-test: ## build an image tarball from a static binary; check its config (user, entrypoint, ports, labels), run its binary; the Dockerfile agrees with it
	$(GO) test -count=1 -v -timeout 10m ./tools/image/

IMAGE ?= ghcr.io/breakwater-proxy/breakwater

image: build certs-deps ## build the container image IMAGE:VERSION without a Docker engine, as bin/breakwater-image.tar (docker load -i …)
	$(GO) run ./tools/image -binary $(BIN) -version $(VERSION) -revision $(REVISION) -tag $(IMAGE):$(VERSION) -out bin/breakwater-image.tar

docker: ## build the container image IMAGE:VERSION (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE):$(VERSION) .

bench: ## breakwater vs direct, httputil.ReverseProxy, nginx, HAProxy, Caddy (installs them); writes bench/results.md
	bash bench/run.sh

chaos: ## the fault-injection and abuse suites (chaos/), long form; the short form runs in make test
	CHAOS_FULL=1 $(GO) test -count=1 -v -timeout 20m ./chaos/

bench-go: ## the in-process Go benchmarks: proxy overhead vs a bare ReverseProxy (both transports), the lean transport, the log buffer, cache, limits
	$(GO) test -run='^$$' -bench=. -benchmem -count=6 -timeout 30m ./proxy/ ./transport/ ./observe/ ./cache/ ./ratelimit/

fuzz: ## run every fuzz target (config, limits, proxy, the upstream response parser) for FUZZTIME each (default 30s)
	@for pkg in ./config/ ./ratelimit/ ./proxy/ ./transport/; do \
		for t in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf bin/
