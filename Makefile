# breakwater — every command a user or CI needs. `make help` lists them.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/breakwater

.PHONY: help build run demo test vet fmt-check unit bench fuzz chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build a static binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) .

run: build ## run with examples/quickstart.yaml
	$(BIN) -config examples/quickstart.yaml

demo: ## the main job: flaky upstream, straight vs through breakwater, side by side
	$(GO) run ./examples/demo

test: vet fmt-check unit ## everything CI runs: vet, gofmt, go test -race (unit, end-to-end)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

bench: ## Go benchmarks (proxy overhead, cache, limiter)
	$(GO) test -run='^$$' -bench=. -benchmem ./proxy/ ./cache/ ./ratelimit/

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@for t in $$($(GO) test -list 'Fuzz.*' ./config/ | grep ^Fuzz); do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} ./config/ || exit 1; done
	@for t in $$($(GO) test -list 'Fuzz.*' ./ratelimit/ | grep ^Fuzz); do $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} ./ratelimit/ || exit 1; done

clean:
	rm -rf bin/
