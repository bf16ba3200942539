// Package testkit holds the helpers that breakwater's tests share across
// packages: polling with a deadline, loopback addresses, a log buffer safe
// for concurrent writers, the built binary run as a child process, counting
// upstreams and metrics read from a registry.
//
// It is imported by _test.go files only, and imports nothing of
// breakwater's own, so that any package's tests may use it.
package testkit

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/config"
)

// pollEvery is how often WaitFor looks at its condition.
const pollEvery = 5 * time.Millisecond

// WaitFor polls cond until it holds, and fails the test if it still does
// not after within; what names the awaited condition in the message.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(pollEvery)
	}
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

// Overrides are the config overrides in-process tests parse with: the
// transport from $BREAKWATER_TRANSPORT, as the binary takes it, so that
// `make test` runs the transport-sensitive suites under both transports.
func Overrides() config.Overrides {
	return config.Overrides{Transport: os.Getenv("BREAKWATER_TRANSPORT")}
}
