// Package charts_test checks the Helm chart in charts/breakwater and the
// plain manifests in examples/kubernetes: helm lint, helm template with
// each values file, the shape of the rendered pod (native sidecar, probes,
// security settings), and that every embedded breakwater config passes
// `breakwater validate`.
//
// Helm comes from the Go module proxy (go install
// helm.sh/helm/v3/cmd/helm@helmVersion), once, into the repository's
// git-ignored bin/; $HELM overrides it. The tests that need it are skipped,
// saying why, only when the module proxy cannot be reached. The
// PrometheusRule is checked with Prometheus's rule parser as a library
// (rules_test.go), and every manifest is decoded strictly into the
// Kubernetes API types (strict_test.go).
package charts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// helmVersion is the Helm release installed from the Go module proxy; the
// Makefile's chart-test comment names it too.
const helmVersion = "v3.22.0"

// kubeVersion is what `helm template` assumes of the cluster: the chart
// needs native sidecars (>= 1.29), and helm's default is far older.
const kubeVersion = "1.31.0"

var root = func() string {
	abs, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return abs
}()

var chartDir = filepath.Join(root, "charts", "breakwater")

// goTool is a command installed from the Go module proxy into the
// repository's git-ignored bin/, once per test binary; env names a
// variable that points at one already installed instead.
type goTool struct {
	name, pkg, version, env string

	once sync.Once
	path string
	skip string // why it cannot be had: the proxy is unreachable
	err  error
}

var helmTool = &goTool{name: "helm", pkg: "helm.sh/helm/v3/cmd/helm", version: helmVersion, env: "HELM"}

// helm returns the path of the helm binary, installing it into bin/ the
// first time.
func helm(t *testing.T) string { return helmTool.get(t) }

func (g *goTool) get(t *testing.T) string {
	t.Helper()
	g.once.Do(func() {
		if p := os.Getenv(g.env); p != "" {
			g.path, _ = filepath.Abs(p)
			return
		}
		bin := filepath.Join(root, "bin", g.name)
		if runtime.GOOS == "windows" {
			bin += ".exe"
		}
		if _, err := os.Stat(bin); err == nil {
			g.path = bin
			return
		}
		t.Logf("installing %s %s from the Go module proxy into bin/ (once; it takes a few minutes)", g.name, g.version)
		ctx, cancel := installContext(t)
		defer cancel()
		start := time.Now()
		out, err := goInstall(ctx, testkit.GoTool(), filepath.Join(root, "bin"), g.pkg+"@"+g.version)
		t.Logf("go install %s@%s: %v after %s", g.pkg, g.version, err, time.Since(start).Round(time.Second))
		switch {
		case err == nil:
			g.path = bin
		case proxyUnreachable(string(out)):
			g.skip = fmt.Sprintf("cannot install %s %s: the Go module proxy is unreachable:\n%s", g.name, g.version, lastLines(string(out), 5))
		case ctx.Err() != nil:
			g.err = fmt.Errorf("go install %s@%s did not finish before the test's deadline and was killed with its compilers; run it by hand, or set $%s:\n%s", g.pkg, g.version, g.env, lastLines(string(out), 20))
		default:
			g.err = fmt.Errorf("go install %s@%s: %v\n%s", g.pkg, g.version, err, lastLines(string(out), 20))
		}
	})
	if g.skip != "" {
		t.Skip(g.skip)
	}
	if g.err != nil {
		t.Fatal(g.err)
	}
	return g.path
}

// installContext ends an install a minute before the test binary's
// -timeout would (or after 15 minutes without one), so that the test ends
// with a message and kills the install rather than dying in a panic that
// leaves it compiling.
func installContext(t *testing.T) (context.Context, context.CancelFunc) {
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(15 * time.Minute)
	}
	return context.WithDeadline(context.Background(), deadline.Add(-time.Minute))
}

// goInstall runs `go install pkg` with GOBIN=bin and returns its output.
// When ctx ends first, the go command and every compiler and linker it
// started (its process group) are killed: a test that gives up on the
// install leaves nothing running.
func goInstall(ctx context.Context, goTool, bin, pkg string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, goTool, "install", "-ldflags=-s -w", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	killGroupOnCancel(cmd)
	cmd.WaitDelay = 10 * time.Second
	return cmd.CombinedOutput()
}

var netErrors = regexp.MustCompile(`dial tcp|no such host|connection refused|i/o timeout|network is unreachable|TLS handshake timeout|proxyconnect|Service Unavailable|502 Bad Gateway`)

func proxyUnreachable(out string) bool { return netErrors.MatchString(out) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runHelm runs helm with args in the repository root and returns stdout;
// a failure ends the test with helm's stderr.
func runHelm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tryHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func tryHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	cmd.Dir = root
	// No cluster, no user config: helm template and lint need neither.
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v\n%s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

var (
	bwOnce sync.Once
	bwDir  string
	bwPath string
	bwErr  error
)

// TestMain removes the breakwater binary built for validate.
func TestMain(m *testing.M) {
	code := m.Run()
	if bwDir != "" {
		os.RemoveAll(bwDir)
	}
	os.Exit(code)
}

// breakwater builds the repository's binary once, into a temp dir.
func breakwater(t *testing.T) string {
	t.Helper()
	bwOnce.Do(func() {
		bwDir, bwErr = os.MkdirTemp("", "breakwater-charts-")
		if bwErr != nil {
			return
		}
		bwPath, bwErr = testkit.BuildBinary(bwDir)
	})
	if bwErr != nil {
		t.Fatal(bwErr)
	}
	return bwPath
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// validateConfig runs `breakwater validate` on a config file's text, with
// every ${VAR} it uses set in the environment, and fails on an error or
// a warning.
func validateConfig(t *testing.T, name, text string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	writeFile(t, file, text)
	cmd := exec.Command(breakwater(t), "validate", "-config", file)
	cmd.Env = os.Environ()
	for _, m := range envRef.FindAllStringSubmatch(text, -1) {
		cmd.Env = append(cmd.Env, m[1]+"=test-"+strings.ToLower(m[1]))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		t.Fatalf("breakwater validate %s: %v\n%s%s\nconfig:\n%s", name, err, stdout.String(), stderr.String(), text)
	}
	if strings.Contains(stderr.String(), "warning:") {
		t.Errorf("breakwater validate %s warns:\n%s", name, stderr.String())
	}
	t.Logf("breakwater validate %s:\n%s", name, stdout.String())
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// object is one Kubernetes manifest, decoded generically.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) name() string { s, _ := get(o, "metadata", "name").(string); return s }

// get walks maps by key and lists by index (an int).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				if o, isObj := v.(object); isObj {
					m, ok = map[string]any(o), true
				}
			}
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// parseManifests decodes a multi-document YAML stream, after checking
// every document against its Kubernetes API type (checkKubernetes).
func parseManifests(t *testing.T, text string) []object {
	t.Helper()
	for _, err := range checkKubernetes(text) {
		t.Errorf("not a valid Kubernetes manifest: %v", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(text))
	var out []object
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("manifests are not valid YAML: %v\n%s", err, text)
		}
		if o == nil {
			continue
		}
		if o["apiVersion"] == nil || o["kind"] == nil {
			t.Errorf("a manifest without apiVersion or kind: %v", o)
		}
		out = append(out, object(o))
	}
	return out
}

func find(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func only(t *testing.T, objs []object, kind string) object {
	t.Helper()
	found := find(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want one %s, found %d", kind, len(found))
	}
	return found[0]
}

// configOf returns the breakwater.yaml held by the ConfigMap.
func configOf(t *testing.T, objs []object) string {
	t.Helper()
	cm := only(t, objs, "ConfigMap")
	text, ok := get(cm, "data", "breakwater.yaml").(string)
	if !ok || text == "" {
		t.Fatalf("ConfigMap %s has no data.breakwater.yaml", cm.name())
	}
	return text
}
