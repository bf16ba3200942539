package observe

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
	"github.com/rs/zerolog"
	"github.com/rs/zerolog/diode"
)

// Every line written before Close is out, whole and in order, after it.
func TestLogBufferLosesNothingOnClose(t *testing.T) {
	out := &testkit.SyncBuffer{}
	b := NewLogBuffer(out, 1<<20, time.Hour) // no timed flush: Close must do it
	log := zerolog.New(b)
	for i := range 5000 {
		log.Info().Int("n", i).Msg("request")
	}
	if out.String() != "" {
		t.Fatalf("written before a flush was due: %d bytes", len(out.String()))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 5000 {
		t.Fatalf("%d lines after Close, want 5000", len(lines))
	}
	for i, l := range lines {
		var m struct{ N int }
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.N != i {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	log.Info().Msg("after close") // written through, not lost
	if !strings.Contains(out.String(), "after close") {
		t.Error("a line written after Close was lost")
	}
}

func TestLogBufferFlushesOnItsInterval(t *testing.T) {
	out := &testkit.SyncBuffer{}
	b := NewLogBuffer(out, 1<<20, 20*time.Millisecond)
	defer b.Close()
	_, _ = b.Write([]byte("{\"message\":\"one\"}\n"))
	testkit.WaitFor(t, 5*time.Second, "the line to be written with a 20 ms interval", func() bool {
		return strings.Contains(out.String(), "one")
	})
}

// stuckWriter blocks every Write until released: stderr piped to a reader
// that stopped reading.
type stuckWriter struct {
	release chan struct{}
	testkit.SyncBuffer
}

func (s *stuckWriter) Write(p []byte) (int, error) {
	<-s.release
	return s.SyncBuffer.Write(p)
}

// A stuck stderr never blocks a writer: lines beyond the buffer are
// dropped, counted, and reported once stderr moves again.
func TestLogBufferNeverBlocksAndCountsDrops(t *testing.T) {
	out := &stuckWriter{release: make(chan struct{})}
	b := NewLogBuffer(out, 4096, 10*time.Millisecond)
	line := []byte(fmt.Sprintf("{\"message\":%q}\n", strings.Repeat("x", 90))) // 100 bytes
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10000 {
			_, _ = b.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a stuck stderr")
	}
	close(out.release)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := b.Dropped(); d < 9000 {
		t.Errorf("Dropped() = %d, want most of 10 000 lines (the buffer holds ~80)", d)
	}
	if !strings.Contains(out.String(), `"dropped_lines":`) {
		t.Error("the drop was not reported in the log")
	}
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if !json.Valid([]byte(l)) {
			t.Fatalf("a torn line: %q", l)
		}
	}
}

// The three ways to write the access log, to a file (what stderr
// redirected by a container runtime is): straight, zerolog's diode, and
// LogBuffer. cpu-ns/op counts the process's CPU, the writer goroutines'
// included.
func BenchmarkLogDirect(b *testing.B) {
	f := benchFile(b)
	benchLog(b, zerolog.New(f), func() {})
}

func BenchmarkLogDiode(b *testing.B) {
	f := benchFile(b)
	var missed atomic.Int64
	d := diode.NewWriter(f, 1<<20, 10*time.Millisecond, func(n int) { missed.Add(int64(n)) })
	defer d.Close()
	benchLog(b, zerolog.New(d), func() {})
	b.ReportMetric(float64(missed.Load())/float64(b.N), "dropped/op")
}

func BenchmarkLogBuffer(b *testing.B) {
	f := benchFile(b)
	// A buffer large enough that nothing is dropped: the cost of writing
	// every line, flushes included, not of dropping them.
	lb := NewLogBuffer(f, 512<<20, 100*time.Millisecond)
	defer lb.Close()
	benchLog(b, zerolog.New(lb), lb.Flush)
	b.ReportMetric(float64(lb.Dropped())/float64(b.N), "dropped/op")
}

func benchFile(b *testing.B) *os.File {
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func benchLog(b *testing.B, log zerolog.Logger, flush func()) {
	b.ReportAllocs()
	start := testkit.ProcessCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			log.Info().Str("request_id", "0123456789abcdef0123456789abcdef").Str("route", "api").
				Str("method", "GET").Str("path", "/v1/items").Int("status", 200).
				Float64("duration_ms", 0.412).Int("attempts", 1).Str("upstream", "api").Msg("request")
		}
	})
	flush()
	b.ReportMetric(float64(testkit.ProcessCPU()-start)/float64(b.N), "cpu-ns/op")
}
