package chaos

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// binary is breakwater, built once in TestMain (not race-built: the
// figures are the binary's, the race detector watches the test's side).
var binary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "breakwater-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "breakwater")
	build := exec.Command("go", "build", "-o", binary, "github.com/breakwater-proxy/breakwater")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// full reports whether the long form runs (CHAOS_FULL=1, make chaos).
func full() bool { return os.Getenv("CHAOS_FULL") == "1" }

// pick is short in the short form, long in the long one.
func pick[T any](short, long T) T {
	if full() {
		return long
	}
	return short
}

// bw is a running breakwater.
type bw struct {
	t      *testing.T
	cmd    *exec.Cmd
	URL    string // data plane, http://127.0.0.1:PORT
	Admin  string // admin, http://127.0.0.1:PORT
	File   string // its config file
	out    *syncBuffer
	exited chan struct{}
}

// startBW writes config to a file and runs breakwater on it, on free
// loopback ports given with -listen and -admin; it returns once /readyz
// says 200. The process is killed at the end of the test if still running.
func startBW(t *testing.T, config string) *bw {
	t.Helper()
	dir := t.TempDir()
	b := &bw{t: t, File: filepath.Join(dir, "breakwater.yaml"), out: &syncBuffer{}, exited: make(chan struct{})}
	b.write(config)
	listen, admin := freeAddr(t), freeAddr(t)
	b.URL, b.Admin = "http://"+listen, "http://"+admin
	b.cmd = exec.Command(binary, "-config", b.File, "-listen", listen, "-admin", admin, "-log-level", "warn")
	b.cmd.Dir = dir
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		select {
		case <-b.exited:
		default:
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
		if t.Failed() {
			t.Logf("breakwater's output (last 4 KiB):\n%s", tail(b.out.String(), 4096))
		}
	})
	b.waitStatus(b.Admin+"/readyz", http.StatusOK, 15*time.Second)
	return b
}

// write replaces the config file the way editors do: a new file renamed over it.
func (b *bw) write(config string) {
	b.t.Helper()
	tmp := b.File + ".tmp"
	if err := os.WriteFile(tmp, []byte(config), 0o600); err != nil {
		b.t.Fatal(err)
	}
	if err := os.Rename(tmp, b.File); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bw) waitStatus(url string, want int, within time.Duration) {
	b.t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	last := "no answer"
	for {
		select {
		case <-b.exited:
			b.t.Fatalf("breakwater exited while waiting for %s: %s", url, tail(b.out.String(), 2048))
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s did not answer %d within %s (last: %s)", url, want, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bw) signal(sig os.Signal) {
	b.t.Helper()
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.t.Fatal(err)
	}
}

// exitCode waits for the process to end and returns its exit code.
func (b *bw) exitCode(within time.Duration) int {
	b.t.Helper()
	select {
	case <-b.exited:
		return b.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		b.t.Fatalf("breakwater still running after %s", within)
		return -1
	}
}

// metric sums the samples of name whose labels contain every one of labels
// (each written as `key="value"`).
func (b *bw) metric(name string, labels ...string) float64 {
	b.t.Helper()
	resp, err := http.Get(b.Admin + "/metrics")
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// client is a keep-alive client for many concurrent requests.
func client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConnsPerHost: 512, DisableCompression: true, Proxy: nil,
	}}
}

// answer is one request's outcome, as a client saw it.
type answer struct {
	status  int
	kind    string // X-Breakwater-Error
	cache   string // X-Breakwater-Cache
	body    []byte
	err     error
	elapsed time.Duration
}

func get(c *http.Client, url string) answer {
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return answer{status: resp.StatusCode, kind: resp.Header.Get("X-Breakwater-Error"),
		cache: resp.Header.Get("X-Breakwater-Cache"), body: body, err: err, elapsed: time.Since(start)}
}

// counter counts what an upstream received: requests in all and by path.
type counter struct {
	mu    sync.Mutex
	n     int
	paths map[string]int
}

func (c *counter) add(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paths == nil {
		c.paths = map[string]int{}
	}
	c.n++
	c.paths[path]++
	return c.n
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *counter) path(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[p]
}

func (c *counter) reset() {
	c.mu.Lock()
	c.n, c.paths = 0, nil
	c.mu.Unlock()
}

func (c *counter) seen() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.paths))
	for k, v := range c.paths {
		out[k] = v
	}
	return out
}

// toxics is one toxiproxy server for the whole run; each test makes its
// own proxies on it.
var toxics = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())

// toxic puts a toxiproxy in front of upstream (host:port) and returns it;
// its Listen is the address to give breakwater.
func toxic(t *testing.T, name, upstream string) *toxiproxy.Proxy {
	t.Helper()
	p := toxiproxy.NewProxy(toxics, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func addToxic(t *testing.T, p *toxiproxy.Proxy, spec string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
		t.Fatalf("toxic %s: %v", spec, err)
	}
}

// hostOf is the host:port of an http:// URL.
func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// freeAddr is a loopback address nobody listens on (listened on, then closed).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// percentile of durations, nearest rank.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
