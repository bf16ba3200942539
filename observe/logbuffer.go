package observe

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LogBuffer is the process log's writer: it never blocks a request on
// stderr. Lines are appended to a buffer under a short lock and written in
// batches by one goroutine, every interval or as soon as the buffer is
// half full, so a busy proxy makes one write(2) per batch rather than one
// per access-log line. When stderr cannot keep up and the buffer is full,
// a line is dropped, counted, and reported in a line of its own at the
// next flush. Close writes what is pending: nothing is lost on a graceful
// stop.
//
// Why not zerolog's diode writer: it also never blocks, but it writes each
// line with its own write(2), from a goroutine that polls, so it moves the
// cost to another core rather than cutting it (BenchmarkLogBuffer*).
type LogBuffer struct {
	out      io.Writer
	max      int           // bytes pending at most; beyond it lines are dropped
	interval time.Duration // how often pending lines are written

	mu      sync.Mutex
	buf     []byte // pending lines, whole lines only
	closed  bool
	dropped uint64 // lines dropped since the last flush (under mu)

	flushMu sync.Mutex // one flush at a time, in order
	spare   []byte     // the buffer being written (under flushMu)
	total   atomic.Uint64

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// NewLogBuffer starts a LogBuffer writing to out every interval (and when
// half of size bytes are pending). size <= 0 means 1 MiB; interval <= 0
// means 100ms.
func NewLogBuffer(out io.Writer, size int, interval time.Duration) *LogBuffer {
	if size <= 0 {
		size = 1 << 20
	}
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	b := &LogBuffer{
		out: out, max: size, interval: interval,
		buf: make([]byte, 0, size/4), spare: make([]byte, 0, size/4),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go b.loop()
	return b
}

// Write queues one log line (zerolog writes a whole line per call). It
// never waits for out; after Close it writes through.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return b.out.Write(p)
	}
	if len(b.buf)+len(p) > b.max {
		b.dropped++
		b.mu.Unlock()
		return len(p), nil
	}
	b.buf = append(b.buf, p...)
	wake := len(b.buf) > b.max/2
	b.mu.Unlock()
	if wake {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Dropped counts the lines dropped so far because out could not keep up.
func (b *LogBuffer) Dropped() uint64 { return b.total.Load() }

func (b *LogBuffer) loop() {
	defer close(b.done)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.kick:
		case <-b.stop:
			b.Flush()
			return
		}
		b.Flush()
	}
}

// Flush writes every pending line now.
func (b *LogBuffer) Flush() {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	b.buf, b.spare = b.spare[:0], b.buf
	dropped := b.dropped
	b.dropped = 0
	b.mu.Unlock()
	if dropped > 0 {
		b.total.Add(dropped)
		// Said where the lines went missing, in the log's own format.
		b.spare = append(b.spare, `{"level":"warn","service":"breakwater","dropped_lines":`...)
		b.spare = strconv.AppendUint(b.spare, dropped, 10)
		b.spare = append(b.spare, `,"time":"`...)
		b.spare = time.Now().UTC().AppendFormat(b.spare, time.RFC3339)
		b.spare = append(b.spare, `","message":"log lines dropped: stderr could not keep up"}`+"\n"...)
	}
	if len(b.spare) > 0 {
		_, _ = b.out.Write(b.spare)
	}
	if cap(b.spare) > b.max { // do not keep a buffer that grew past its bound
		b.spare = make([]byte, 0, b.max/4)
	}
}

// Close writes what is pending and makes later writes go straight to out.
func (b *LogBuffer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.Flush() // anything written between the last flush and closed
	return nil
}

// FollowLogDrops counts the log lines a LogBuffer dropped, read at scrape
// time: breakwater_log_lines_dropped_total.
func (m *Metrics) FollowLogDrops(dropped func() uint64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "breakwater_log_lines_dropped_total",
		Help: "Log lines (access log included) dropped because stderr could not keep up; the log says so too."},
		func() float64 { return float64(dropped()) }))
}
