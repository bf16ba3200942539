package chaos

import (
	"bufio"
	"fmt"
	"io"
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

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// binary is breakwater, built once in TestMain (not race-built: the
// figures are the binary's, the race detector watches the test's side).
var binary string

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithBinary(m, &binary))
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
	*testkit.Breakwater
	t    *testing.T
	File string // its config file
}

// startBW writes config to a file and runs breakwater on it, on free
// loopback ports given with -listen and -admin; it returns once /readyz
// says 200. The process is killed at the end of the test if still running.
func startBW(t *testing.T, config string) *bw {
	t.Helper()
	dir := t.TempDir()
	b := &bw{t: t, File: filepath.Join(dir, "breakwater.yaml")}
	testkit.ReplaceFile(t, b.File, config)
	b.Breakwater = testkit.StartBreakwater(t, 15*time.Second, func(listen, admin string) *exec.Cmd {
		cmd := exec.Command(binary, "-config", b.File, "-listen", listen, "-admin", admin, "-log-level", "warn")
		cmd.Dir = dir
		return cmd
	})
	return b
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
