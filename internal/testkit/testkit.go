// Package testkit holds the helpers that breakwater's tests share across
// packages: polling with a deadline, loopback addresses, a log buffer safe
// for concurrent writers, HTTP GETs that fail the test on error, the
// process's CPU time, the built binary run as a child process, counting
// upstreams, breakers read from the admin API and metrics read from a
// registry.
//
// It is imported by _test.go files only. Of breakwater's own packages it
// imports config alone (for Overrides), and config imports no other, so
// any package's tests may use it except config's own.
package testkit

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// pollEvery is how often WaitFor looks at its condition.
const pollEvery = 5 * time.Millisecond

// WaitFor polls cond until it holds, and fails the test if it still does
// not after within; what names the awaited condition in the message. It
// returns how long the wait took, a figure for the log.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(start)
}

// FreeAddr is a loopback host:port that nothing listens on: it was
// listened on, then closed. A child process can bind it; a client that
// dials it is refused.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// DeadURL is an http:// URL that refuses connections (see FreeAddr).
func DeadURL(t testing.TB) string {
	t.Helper()
	return "http://" + FreeAddr(t)
}

// ReplaceFile replaces the file at path with text the way editors do: a
// new file renamed over the old one, so that a watcher never reads half a
// file.
func ReplaceFile(t testing.TB, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// CheckLeaks fails the test if it leaves goroutines behind. Call it first,
// so that its cleanup runs last, after servers and transports are closed.
func CheckLeaks(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				var buf bytes.Buffer
				_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Errorf("goroutines: %d before, %d after the test:\n%s", before, runtime.NumGoroutine(), buf.String())
				return
			}
			time.Sleep(pollEvery)
		}
	})
}

// SyncBuffer is a bytes.Buffer that many goroutines may write while a test
// reads it: a child process's output, a zerolog sink.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// JSONLines decodes every line written so far, skipping empty ones; a
// line that is not one JSON object fails the test.
func (b *SyncBuffer) JSONLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// ProcessCPU is the user+system CPU time this process has used: client,
// proxy and upstream together when a test runs them in one process. A busy
// machine disturbs it far less than wall time, so benchmarks report it.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Overrides are the config overrides in-process tests parse with: the
// transport from $BREAKWATER_TRANSPORT, as the binary takes it, so that
// `make test` runs the transport-sensitive suites under both transports.
func Overrides() config.Overrides {
	return config.Overrides{Transport: os.Getenv("BREAKWATER_TRANSPORT")}
}
