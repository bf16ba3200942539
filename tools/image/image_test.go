package main

import (
	"archive/tar"
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

const (
	testVersion  = "v0.0.0-imagetest"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	testTag      = "breakwater:" + testVersion
)

// The image tarball holds an OCI image whose config runs breakwater as a
// non-root user with its ports and labels, and whose layer holds a binary
// that runs, the CA bundle, and a passwd entry for the user.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CGO_ENABLED", "0") // static, as make build builds it
	bin, err := testkit.BuildBinary(dir, "-ldflags=-X main.version="+testVersion)
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(certs, testCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	if err := write(options{binary: bin, certs: certs, version: testVersion, revision: testRevision}, testTag, out); err != nil {
		t.Fatal(err)
	}

	tag, err := name.NewTag(testTag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("the tarball holds no image tagged %s: %v", testTag, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	uid, gid, _ := strings.Cut(cfg.User, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 || uid != gid {
		t.Errorf("user %q, want a numeric non-root uid:gid (Kubernetes runAsNonRoot needs a number)", cfg.User)
	}
	if !slices.Equal(cfg.Entrypoint, []string{"/usr/local/bin/breakwater"}) || len(cfg.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/breakwater] and none", cfg.Entrypoint, cfg.Cmd)
	}
	if ports := slices.Sorted(maps.Keys(cfg.ExposedPorts)); !slices.Equal(ports, []string{"8080/tcp", "9901/tcp"}) {
		t.Errorf("exposed ports %v, want 8080/tcp and 9901/tcp", ports)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.version":  testVersion,
		"org.opencontainers.image.revision": testRevision,
		"org.opencontainers.image.source":   "https://github.com/breakwater-proxy/breakwater",
		"org.opencontainers.image.title":    "breakwater",
	} {
		if cfg.Labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, cfg.Labels[k], want)
		}
	}
	if !slices.Contains(cfg.Env, "BREAKWATER_CONFIG=/etc/breakwater/breakwater.yaml") {
		t.Errorf("env %v does not point BREAKWATER_CONFIG at the mounted config", cfg.Env)
	}

	// The layer, as a container runtime unpacks it.
	files := map[string]*tar.Header{}
	var extracted string
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h // mutate.Extract cleans names: tmp, not tmp/
		switch h.Name {
		case "usr/local/bin/breakwater":
			extracted = filepath.Join(dir, "extracted")
			f, err := os.OpenFile(extracted, os.O_CREATE|os.O_WRONLY, 0o700)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		case "etc/ssl/certs/ca-certificates.crt":
			data, _ := io.ReadAll(tr)
			if !x509.NewCertPool().AppendCertsFromPEM(data) {
				t.Errorf("%s holds no certificate", h.Name)
			}
		case "etc/passwd":
			data, _ := io.ReadAll(tr)
			if !strings.Contains(string(data), ":"+uid+":"+gid+":") {
				t.Errorf("/etc/passwd has no entry for uid %s:\n%s", uid, data)
			}
		}
	}
	if h := files["usr/local/bin/breakwater"]; h == nil || h.Mode&0o111 == 0 || h.Uid != 0 {
		t.Fatalf("the layer's binary: %+v; want an executable owned by root (not writable by the user that runs it)", h)
	}
	if h := files["tmp"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("/tmp: %+v, want mode 1777", h)
	}
	if h := files["home/nonroot"]; h == nil || strconv.Itoa(h.Uid) != uid {
		t.Errorf("the user's home: %+v, want it owned by %s", h, uid)
	}
	got, err := exec.Command(extracted, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "breakwater "+testVersion {
		t.Errorf("the image's binary, run as `breakwater version`: %q, %v; want %q", got, err, "breakwater "+testVersion)
	}

	// The same inputs give the same image.
	again := filepath.Join(dir, "again.tar")
	if err := write(options{binary: bin, certs: certs, version: testVersion, revision: testRevision}, testTag, again); err != nil {
		t.Fatal(err)
	}
	img2, err := tarball.ImageFromPath(again, &tag)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same inputs: %s and %s", d1, d2)
	}
}

// The builder refuses what could not run in the image: a dynamically
// linked binary (the image has no libc), a non-executable, a CA file
// without certificates.
func TestImageRefuses(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(certs, testCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		binary, certs string
		want          string
	}{
		{"dynamic binary", sh, certs, "dynamically linked"},
		{"not an executable", text, certs, "not a Linux executable"},
		{"no certificates", sh, text, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "dynamic binary" && !isDynamic(t, sh) {
				t.Skipf("%s is statically linked here", sh)
			}
			err := write(options{binary: tc.binary, certs: tc.certs, version: "v1", revision: "r"}, testTag, filepath.Join(dir, "x.tar"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func isDynamic(t *testing.T, path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = staticArch(data)
	return err != nil && strings.Contains(err.Error(), "dynamically linked")
}

// testCA is a PEM bundle of one self-signed CA certificate.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "image test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// The Dockerfile's final stage says what the image builder sets: user,
// entrypoint, ports, labels, environment, where the binary goes.
func TestDockerfileAgrees(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := parseDockerfile(t, f, map[string]string{"VERSION": testVersion, "REVISION": testRevision})
	want := imageConfig(testVersion, testRevision)

	if d.user != want.User {
		t.Errorf("Dockerfile USER %q, image builder %q", d.user, want.User)
	}
	if !slices.Equal(d.entrypoint, want.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %q, image builder %q", d.entrypoint, want.Entrypoint)
	}
	if wantPorts := slices.Sorted(maps.Keys(want.ExposedPorts)); !slices.Equal(d.ports, wantPorts) {
		t.Errorf("Dockerfile EXPOSE %v, image builder %v", d.ports, wantPorts)
	}
	if !maps.Equal(d.labels, want.Labels) {
		t.Errorf("Dockerfile LABEL\n  %v\nimage builder\n  %v", d.labels, want.Labels)
	}
	for _, e := range d.env {
		if !slices.Contains(want.Env, e) {
			t.Errorf("Dockerfile ENV %s; the image builder's env is %v", e, want.Env)
		}
	}
	if !slices.Contains(d.copied, binaryPath) {
		t.Errorf("the Dockerfile copies the binary to %v, not %s", d.copied, binaryPath)
	}
}

// dockerfile is what the final stage of a Dockerfile sets.
type dockerfile struct {
	user       string
	entrypoint []string
	ports, env []string
	labels     map[string]string
	copied     []string // COPY destinations
}

var (
	labelPair = regexp.MustCompile(`([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S+)`)
	argRef    = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)
)

// parseDockerfile reads the instructions of the last stage (after the
// last FROM), joining continued lines and substituting build args.
func parseDockerfile(t *testing.T, r io.Reader, args map[string]string) dockerfile {
	t.Helper()
	var d dockerfile
	var lines []string
	sc := bufio.NewScanner(r)
	cur := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur += rest + " "
			continue
		}
		lines = append(lines, cur+line)
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	expand := func(s string) string {
		return argRef.ReplaceAllStringFunc(s, func(m string) string {
			sub := argRef.FindStringSubmatch(m)
			return args[sub[1]+sub[2]]
		})
	}
	unquote := func(s string) string {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
		return s
	}
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d = dockerfile{labels: map[string]string{}} // a new stage
		case "USER":
			d.user = expand(rest)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s is not the exec (JSON) form: %v", rest, err)
			}
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				d.ports = append(d.ports, p)
			}
		case "LABEL":
			for _, m := range labelPair.FindAllStringSubmatch(rest, -1) {
				d.labels[m[1]] = expand(unquote(m[2]))
			}
		case "ENV":
			for _, m := range labelPair.FindAllStringSubmatch(rest, -1) {
				d.env = append(d.env, m[1]+"="+expand(unquote(m[2])))
			}
		case "COPY":
			f := strings.Fields(rest)
			d.copied = append(d.copied, f[len(f)-1])
		}
	}
	slices.Sort(d.ports)
	return d
}
