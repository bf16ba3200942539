// Command image builds breakwater's container image without a Docker
// engine: one layer holding the static binary, CA certificates and a
// passwd entry for the non-root user, on an empty base, written as an
// image tarball (the `docker save` format, go-containerregistry's
// tarball.Write) that `docker load` and `podman load` read and that
// `crane push` can push. `make image` runs it on `make build`'s binary.
//
// The image is what the Dockerfile builds on distroless static:nonroot
// (TestDockerfileAgrees keeps the two in step): user 65532, entrypoint
// /usr/local/bin/breakwater, ports 8080 and 9901, the config read from
// /etc/breakwater/breakwater.yaml, and the OCI labels.
//
//	go run ./tools/image -binary bin/breakwater -version v1.2.3 -revision $(git rev-parse HEAD) \
//	    -tag ghcr.io/breakwater-proxy/breakwater:v1.2.3 -out bin/breakwater-image.tar
package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Where things are in the image; the Dockerfile says the same.
const (
	binaryPath = "/usr/local/bin/breakwater"
	certsPath  = "/etc/ssl/certs/ca-certificates.crt"
	configPath = "/etc/breakwater/breakwater.yaml"
	// uid and gid 65532: distroless's "nonroot", which the Helm chart's
	// securityContext and the Dockerfile's USER name too.
	nonroot = 65532
	source  = "https://github.com/breakwater-proxy/breakwater"
)

// options are what one image is built from.
type options struct {
	binary, certs     string // files on the build machine
	version, revision string
}

func main() {
	var o options
	var out, tag string
	flag.StringVar(&o.binary, "binary", "bin/breakwater", "the static breakwater binary (make build)")
	flag.StringVar(&o.certs, "certs", "/etc/ssl/certs/ca-certificates.crt", "the CA certificate bundle to install at "+certsPath+" (Debian's ca-certificates package)")
	flag.StringVar(&o.version, "version", "dev", "the version the binary was built as (org.opencontainers.image.version)")
	flag.StringVar(&o.revision, "revision", "unknown", "the git commit it was built from (org.opencontainers.image.revision)")
	flag.StringVar(&out, "out", "bin/breakwater-image.tar", "the image tarball to write")
	flag.StringVar(&tag, "tag", "", "the image's name and tag in the tarball (default ghcr.io/breakwater-proxy/breakwater:VERSION)")
	flag.Parse()
	if tag == "" {
		tag = "ghcr.io/breakwater-proxy/breakwater:" + o.version
	}
	if err := write(o, tag, out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s); load it with: docker load -i %s\n", out, tag, out)
}

// write builds the image and writes it to out, named tag.
func write(o options, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	img, err := build(o)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// imageConfig is the image's run configuration.
func imageConfig(version, revision string) v1.Config {
	return v1.Config{
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		Entrypoint: []string{binaryPath},
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"SSL_CERT_FILE=" + certsPath,
			"BREAKWATER_CONFIG=" + configPath,
		},
		// 8080: data plane; 9901: admin (health, readiness, metrics).
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "9901/tcp": {}},
		WorkingDir:   "/home/nonroot",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "breakwater",
			"org.opencontainers.image.description": "A resilience sidecar for HTTP APIs: retries, circuit breakers, rate limits, quotas, caching and fallbacks from one YAML file",
			"org.opencontainers.image.source":      source,
			"org.opencontainers.image.version":     version,
			"org.opencontainers.image.revision":    revision,
		},
	}
}

// build makes the image: one layer on an empty base.
func build(o options) (v1.Image, error) {
	certs, err := os.ReadFile(o.certs)
	if err != nil {
		return nil, fmt.Errorf("%w (install Debian's ca-certificates: make certs-deps)", err)
	}
	if pool := x509.NewCertPool(); !pool.AppendCertsFromPEM(certs) {
		return nil, fmt.Errorf("%s holds no PEM certificate", o.certs)
	}
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, err
	}
	arch, err := staticArch(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.binary, err)
	}
	layerTar, err := layerFiles(bin, certs)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{
		CreatedBy: "breakwater tools/image",
		Comment:   "breakwater " + o.version + ", CA certificates, passwd",
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config = imageConfig(o.version, o.revision)
	return mutate.ConfigFile(img, cf)
}

// staticArch returns the Go architecture of a Linux ELF executable, and
// refuses one that needs a dynamic loader: the image has no libc.
func staticArch(bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("not a Linux executable: %w", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked; the image has no libc: build it with CGO_ENABLED=0 (make build)")
		}
	}
	arch, ok := map[elf.Machine]string{
		elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64", elf.EM_386: "386", elf.EM_ARM: "arm",
		elf.EM_PPC64: "ppc64le", elf.EM_S390: "s390x", elf.EM_RISCV: "riscv64",
	}[f.Machine]
	if !ok {
		return "", fmt.Errorf("an executable for %v, which this builder does not know", f.Machine)
	}
	return arch, nil
}

// layerFiles is the layer's tar: the binary, the CA bundle, /etc/passwd
// and /etc/group naming the non-root user, its home, /tmp, and the
// directory the config is mounted on. Times are the epoch, so that the
// same inputs give the same image digest.
func layerFiles(bin, certs []byte) ([]byte, error) {
	type entry struct {
		path     string
		mode     int64
		uid      int
		data     []byte
		typeflag byte
	}
	dir := func(path string, mode int64, uid int) entry { return entry{path, mode, uid, nil, tar.TypeDir} }
	file := func(path string, mode int64, data []byte) entry { return entry{path, mode, 0, data, tar.TypeReg} }
	entries := []entry{
		dir("etc/", 0o755, 0),
		file("etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)),
		file("etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", nonroot)),
		dir("etc/breakwater/", 0o755, 0),
		dir("etc/ssl/", 0o755, 0),
		dir("etc/ssl/certs/", 0o755, 0),
		file(certsPath[1:], 0o644, certs),
		dir("home/", 0o755, 0),
		dir("home/nonroot/", 0o700, nonroot),
		dir("tmp/", 0o1777, 0),
		dir("usr/", 0o755, 0),
		dir("usr/local/", 0o755, 0),
		dir("usr/local/bin/", 0o755, 0),
		file(binaryPath[1:], 0o755, bin),
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Typeflag: e.typeflag, Name: e.path, Mode: e.mode, Uid: e.uid, Gid: e.uid,
			Size: int64(len(e.data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
