package cache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// recorder counts the capture callbacks.
type recorder struct {
	mu        sync.Mutex
	dones     int
	body      []byte
	abandons  int
	closedSrc atomic.Bool
}

func (r *recorder) done(body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dones++
	r.body = body
}

func (r *recorder) abandon() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.abandons++
}

func (r *recorder) want(t *testing.T, dones, abandons int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dones != dones || r.abandons != abandons {
		t.Fatalf("done called %d times, abandon %d; want %d and %d", r.dones, r.abandons, dones, abandons)
	}
}

// source wraps a reader as the upstream body, recording Close.
func (r *recorder) source(rd io.Reader) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{rd, closerFunc(func() error { r.closedSrc.Store(true); return nil })}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// choppy returns short reads of varying sizes, as a network does.
type choppy struct {
	r   io.Reader
	rnd *rand.Rand
}

func (c *choppy) Read(p []byte) (int, error) {
	if n := 1 + c.rnd.IntN(9000); n < len(p) {
		p = p[:n]
	}
	return c.r.Read(p)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rnd := rand.NewChaCha8([32]byte{1})
	_, _ = rnd.Read(b)
	return b
}

// readOdd reads rc to its end with a cycle of odd buffer sizes, hashing what
// it gets.
func readOdd(rc io.Reader) ([32]byte, int, error) {
	h := sha256.New()
	sizes := []int{1, 7, 4093, 65537, 333, 3}
	total := 0
	for i := 0; ; i++ {
		buf := make([]byte, sizes[i%len(sizes)])
		n, err := rc.Read(buf)
		h.Write(buf[:n])
		total += n
		if err == io.EOF {
			return [32]byte(h.Sum(nil)), total, nil
		}
		if err != nil {
			return [32]byte(h.Sum(nil)), total, err
		}
	}
}

func TestCapturePassesThroughAndCapturesWholeBody(t *testing.T) {
	data := randomBytes(3<<20 + 17)
	want := sha256.Sum256(data)
	var rec recorder
	src := rec.source(&choppy{r: bytes.NewReader(data), rnd: rand.New(rand.NewPCG(1, 2))})
	body := Capture(src, 4<<20, rec.done, rec.abandon)

	got, n, err := readOdd(body)
	if err != nil || n != len(data) || got != want {
		t.Fatalf("client got %d bytes, err %v, sha256 match %v; want %d bytes", n, err, got == want, len(data))
	}
	rec.want(t, 1, 0)
	if sha256.Sum256(rec.body) != want {
		t.Fatalf("captured %d bytes that differ from the %d sent", len(rec.body), len(data))
	}
	if cap(rec.body)-len(rec.body) > len(rec.body)/8 {
		t.Fatalf("captured body keeps %d spare bytes", cap(rec.body)-len(rec.body))
	}

	// Reads after EOF and Close do not call anything again.
	if n, err := body.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF = %d, %v", n, err)
	}
	if err := body.Close(); err != nil {
		t.Fatal(err)
	}
	rec.want(t, 1, 0)
	if !rec.closedSrc.Load() {
		t.Fatal("Close did not close the upstream body")
	}
}

func TestCaptureDataWithEOF(t *testing.T) {
	// Bodies may return their last bytes together with io.EOF.
	var rec recorder
	body := Capture(io.NopCloser(iotest.DataErrReader(bytes.NewReader([]byte("hello")))), 5, rec.done, nil)
	if got, err := io.ReadAll(body); err != nil || string(got) != "hello" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	rec.want(t, 1, 0)
	if string(rec.body) != "hello" {
		t.Fatalf("captured %q", rec.body)
	}
}

func TestCaptureEmptyBody(t *testing.T) {
	var rec recorder
	body := Capture(http.NoBody, 10, rec.done, nil)
	if _, err := io.ReadAll(body); err != nil {
		t.Fatal(err)
	}
	rec.want(t, 1, 0)
	if rec.body == nil || len(rec.body) != 0 {
		t.Fatalf("empty body captured as %#v, want an empty non-nil slice", rec.body)
	}
}

func TestCaptureAbandons(t *testing.T) {
	data := randomBytes(1 << 20)
	boom := errors.New("connection reset by peer")
	tests := []struct {
		name string
		src  func() io.Reader
		max  int64
		// read is how the client consumes the body; it returns the bytes
		// it got and the error that ended its reading.
		read    func(io.Reader) ([]byte, error)
		wantErr error
		wantAll bool // the client still gets every byte
		// early is true when the capture must be abandoned as soon as the
		// body fails or outgrows max, not only at Close.
		early bool
	}{
		{
			name: "early Close",
			src:  func() io.Reader { return bytes.NewReader(data) },
			max:  int64(len(data)),
			read: func(rc io.Reader) ([]byte, error) {
				buf := make([]byte, len(data)/2)
				n, err := io.ReadFull(rc, buf)
				return buf[:n], err
			},
		},
		{
			name:    "read error mid-body",
			src:     func() io.Reader { return io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(boom)) },
			max:     int64(len(data)),
			read:    io.ReadAll,
			wantErr: boom,
			early:   true,
		},
		{
			name: "truncated body",
			src: func() io.Reader {
				return io.MultiReader(bytes.NewReader(data[:1000]), iotest.ErrReader(io.ErrUnexpectedEOF))
			},
			max:     int64(len(data)),
			read:    io.ReadAll,
			wantErr: io.ErrUnexpectedEOF,
			early:   true,
		},
		{
			name:    "over max by one byte",
			src:     func() io.Reader { return bytes.NewReader(data) },
			max:     int64(len(data)) - 1,
			read:    io.ReadAll,
			wantAll: true,
			early:   true,
		},
		{
			name:    "far over max",
			src:     func() io.Reader { return bytes.NewReader(data) },
			max:     4096,
			read:    io.ReadAll,
			wantAll: true,
			early:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			src := rec.source(&choppy{r: tt.src(), rnd: rand.New(rand.NewPCG(3, 4))})
			body := Capture(src, tt.max, rec.done, rec.abandon)
			got, err := tt.read(body)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("client read error %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, data[:len(got)]) {
				t.Fatal("client bytes differ from the upstream's")
			}
			if tt.wantAll && len(got) != len(data) {
				t.Fatalf("client got %d of %d bytes: streaming must go on past max", len(got), len(data))
			}
			if tt.early {
				rec.want(t, 0, 1)
			} else {
				rec.want(t, 0, 0)
			}
			_ = body.Close()
			_ = body.Close()
			rec.want(t, 0, 1)
			if !rec.closedSrc.Load() {
				t.Fatal("upstream body not closed")
			}
		})
	}
}

func TestCaptureNoLimit(t *testing.T) {
	data := randomBytes(100_000)
	var rec recorder
	if _, err := io.ReadAll(Capture(io.NopCloser(bytes.NewReader(data)), 0, rec.done, nil)); err != nil {
		t.Fatal(err)
	}
	rec.want(t, 1, 0)
	if !bytes.Equal(rec.body, data) {
		t.Fatal("captured body differs")
	}
}

// TestCaptureCloseInterruptsRead closes the body from another goroutine
// while a Read is blocked on a stalled upstream, as the proxy does when the
// client goes away.
func TestCaptureCloseInterruptsRead(t *testing.T) {
	pr, pw := io.Pipe()
	var rec recorder
	body := Capture(pr, 1<<20, rec.done, rec.abandon)
	go func() { _, _ = pw.Write([]byte("partial")) }()
	buf := make([]byte, 64)
	if n, err := body.Read(buf); err != nil || string(buf[:n]) != "partial" {
		t.Fatalf("first read = %q, %v", buf[:n], err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := body.Read(buf) // blocks: the upstream stalls
		readErr <- err
	}()
	if err := body.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("blocked read ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the blocked Read")
	}
	rec.want(t, 0, 1)
}

// TestCaptureOverRealSockets runs real upstreams: one that finishes a
// chunked body, and one that resets mid-body after promising more.
func TestCaptureOverRealSockets(t *testing.T) {
	data := randomBytes(512 << 10)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/whole" {
			w.(http.Flusher).Flush() // no Content-Length: chunked
			for chunk := range slices.Chunk(data, 10_000) {
				_, _ = w.Write(chunk)
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_ = buf.Flush()
		_ = conn.Close()
	}))
	defer upstream.Close()
	client := upstream.Client()

	t.Run("whole chunked body", func(t *testing.T) {
		resp, err := client.Get(upstream.URL + "/whole")
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != -1 {
			t.Fatalf("ContentLength %d: want a chunked body", resp.ContentLength)
		}
		var rec recorder
		body := Capture(resp.Body, 1<<20, rec.done, rec.abandon)
		got, n, err := readOdd(bufio.NewReaderSize(body, 16))
		_ = body.Close()
		if err != nil || n != len(data) || got != sha256.Sum256(data) {
			t.Fatalf("client got %d bytes, err %v", n, err)
		}
		rec.want(t, 1, 0)
		if !bytes.Equal(rec.body, data) {
			t.Fatal("captured body differs")
		}
	})

	t.Run("upstream reset mid-body", func(t *testing.T) {
		resp, err := client.Get(upstream.URL + "/reset")
		if err != nil {
			t.Fatal(err)
		}
		var rec recorder
		body := Capture(resp.Body, 1<<20, rec.done, rec.abandon)
		got, err := io.ReadAll(body)
		_ = body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read error %v after %d bytes, want io.ErrUnexpectedEOF", err, len(got))
		}
		rec.want(t, 0, 1)
	})
}

func TestCompactDropsSpareCapacity(t *testing.T) {
	buf := make([]byte, 100, 1000)
	buf[99] = 7
	if got := compact(buf); len(got) != 100 || cap(got) != 100 || got[99] != 7 {
		t.Fatalf("compact: len %d cap %d", len(got), cap(got))
	}
	tight := make([]byte, 100, 105)
	if got := compact(tight); &got[0] != &tight[0] {
		t.Fatal("compact copied a buffer with little spare room")
	}
}
