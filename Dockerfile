# syntax=docker/dockerfile:1
#
# breakwater's container image: a static binary on distroless, run as the
# distroless "nonroot" user (65532). Build it with `make docker`, or:
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) -t breakwater:v1.2.3 .
#
# Without a Docker engine, `make image` builds the same image (tools/image:
# user, entrypoint, ports, labels and environment as here, which
# tools/image's TestDockerfileAgrees checks) into bin/breakwater-image.tar.
#
# The config is read from $BREAKWATER_CONFIG (/etc/breakwater/breakwater.yaml):
# mount yours there (the Helm chart mounts a ConfigMap).
#
# Inside a container, 127.0.0.1 is the container's own loopback, so:
#   - the data plane must listen on 0.0.0.0 to be reached from outside
#     the pod or container (ingress): set `listen: 0.0.0.0:8080` in the
#     config. A pure egress sidecar, which only the app in the same pod
#     calls, can keep `listen: 127.0.0.1:8080`.
#   - the admin listener stays on loopback unless the config says
#     `admin.allow_remote: true` and sets `admin.token`. Kubernetes probes
#     come from the kubelet, outside the pod's network namespace, so they
#     cannot reach a loopback admin port: the Helm chart binds admin to
#     0.0.0.0:9901 with allow_remote and a token from a Secret. Its GET
#     endpoints (/healthz, /readyz, /metrics) need no token; every POST does.
#
# Quick mode works too (no config file, safe defaults):
#   docker run --rm -p 8080:8080 breakwater -upstream https://api.example.com -listen 0.0.0.0:8080
#
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/breakwater .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="breakwater" \
      org.opencontainers.image.description="A resilience sidecar for HTTP APIs: retries, circuit breakers, rate limits, quotas, caching and fallbacks from one YAML file" \
      org.opencontainers.image.source="https://github.com/breakwater-proxy/breakwater" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/breakwater /usr/local/bin/breakwater
ENV BREAKWATER_CONFIG=/etc/breakwater/breakwater.yaml
USER 65532:65532
# 8080: data plane; 9901: admin (health, readiness, metrics, breakers).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/breakwater"]
