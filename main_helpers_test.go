package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// binary is the breakwater built once for every test in TestMain.
var binary string

// testVersion is stamped into the test binary.
const testVersion = "v9.9.9-test"

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &binary, "-ldflags", "-X main.version="+testVersion))
}

// env is the test's environment without BREAKWATER_CONFIG, plus extra.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BREAKWATER_CONFIG=") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// runBinary runs breakwater to completion and returns its combined
// output and exit code.
func runBinary(t *testing.T, dir string, extraEnv []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir, cmd.Env = dir, env(extraEnv...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return string(out), exit.ExitCode()
	}
	t.Fatalf("breakwater %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", 0
}

// startBinary starts breakwater in dir; it is killed at the end of the
// test if it is still running.
func startBinary(t *testing.T, dir string, args ...string) *testkit.Process {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir, cmd.Env = dir, env()
	return testkit.Start(t, cmd)
}

// writeFile writes text to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
