package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// moduleRoot is the directory of breakwater's go.mod, found with `go env`.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside breakwater's module: run the demo from the repository (make demo)")
	}
	return filepath.Dir(mod), nil
}

// goTool is the go command: the one on PATH, else the one this program
// was built with.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildBreakwater compiles the module's main package into dir.
func buildBreakwater(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "breakwater")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", bin, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// freeAddr returns a loopback address that was free a moment ago: listen
// on :0, note the port, close. breakwater binds it right after.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// process is a running breakwater.
type process struct {
	cmd         *exec.Cmd
	listen      string
	admin       string
	log         *bytes.Buffer
	exited      chan struct{}
	waitErr     error
	stopEvents  context.CancelFunc
	eventsDone  chan struct{}
	eventsMu    sync.Mutex
	eventCounts map[string]int
}

// safeBuffer lets the process write its log while we may read it.
type safeBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// startBreakwater runs bin with the config on two free loopback ports and
// waits until /readyz answers 200.
func startBreakwater(ctx context.Context, bin, configFile, upstreamURL string) (*process, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &process{listen: listen, admin: admin, log: &bytes.Buffer{}, exited: make(chan struct{}), eventCounts: map[string]int{}}
	logw := &safeBuffer{b: p.log}
	p.cmd = exec.Command(bin, "run", "-config", configFile, "-listen", listen, "-admin", admin)
	p.cmd.Env = append(os.Environ(), "DEMO_UPSTREAM_URL="+upstreamURL)
	p.cmd.Stdout, p.cmd.Stderr = logw, logw
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("breakwater exited at start (%v):\n%s", p.waitErr, p.logText())
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("breakwater not ready after 15s:\n%s", p.logText())
		}
	}
	p.followEvents()
	return p, nil
}

func (p *process) logText() string {
	s := p.log.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

// followEvents counts the admin /events stream's event types (breaker
// transitions, quota pauses, …) until stop.
func (p *process) followEvents() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopEvents, p.eventsDone = cancel, make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(p.eventsDone)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/events", nil)
		resp, err := http.DefaultClient.Do(req)
		close(ready)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				p.eventsMu.Lock()
				p.eventCounts[name]++
				p.eventsMu.Unlock()
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Second):
	}
}

func (p *process) events(name string) int {
	p.eventsMu.Lock()
	defer p.eventsMu.Unlock()
	return p.eventCounts[name]
}

// stop ends breakwater the way Kubernetes would (SIGTERM), and kills it if
// it does not exit within 10 s.
func (p *process) stop() {
	if p.stopEvents != nil {
		p.stopEvents()
		<-p.eventsDone
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// adminStats is what breakwater says it did, from /metrics, /breakers and
// the /events stream.
type adminStats struct {
	attempts, retries              float64
	attemptsByResult               map[string]float64
	cacheHits, stale, fallback     float64
	quotaWaits, quotaWaitSeconds   float64
	quotaExhausted                 float64
	pauses                         int
	transitions                    []transition
	breakers                       []breakerState
	requestsByOutcome, budgetSpent map[string]float64
}

type transition struct {
	breaker, from, to string
	n                 float64
}

type breakerState struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	State string `json:"state"`
}

func (p *process) stats() (*adminStats, error) {
	s := &adminStats{attemptsByResult: map[string]float64{}, requestsByOutcome: map[string]float64{}, budgetSpent: map[string]float64{}}
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	samples, err := parseMetrics(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	for _, m := range samples {
		switch m.name {
		case "breakwater_upstream_attempts_total":
			s.attempts += m.value
			s.attemptsByResult[m.labels["result"]] += m.value
		case "breakwater_retries_total":
			s.retries += m.value
		case "breakwater_requests_total":
			s.requestsByOutcome[m.labels["outcome"]] += m.value
		case "breakwater_quota_wait_seconds_count":
			s.quotaWaits += m.value
		case "breakwater_quota_wait_seconds_bucket":
			// Every attempt is observed, one granted at once as a zero
			// wait: count only real waits (over a millisecond).
			if m.labels["le"] == "0.001" {
				s.quotaWaits -= m.value
			}
		case "breakwater_quota_wait_seconds_sum":
			s.quotaWaitSeconds += m.value
		case "breakwater_rate_limited_total":
			if m.labels["scope"] == "quota" {
				s.quotaExhausted += m.value
			}
		case "breakwater_circuit_breaker_transitions_total":
			if m.value > 0 {
				s.transitions = append(s.transitions, transition{m.labels["breaker"], m.labels["from"], m.labels["to"], m.value})
			}
		case "breakwater_retry_budget_exhausted_total":
			s.budgetSpent[m.labels["route"]] += m.value
		}
	}
	s.cacheHits, s.stale, s.fallback = s.requestsByOutcome["cache_hit"], s.requestsByOutcome["stale"], s.requestsByOutcome["fallback"]

	resp, err = http.Get("http://" + p.admin + "/breakers")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b struct {
		Breakers []breakerState `json:"breakers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return nil, fmt.Errorf("/breakers: %w", err)
	}
	s.breakers = b.Breakers
	s.pauses = p.events("quota_paused")
	return s, nil
}

// sample is one line of Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics reads the Prometheus text exposition format, enough of it
// for breakwater's own metrics: name{label="value",…} value.
func parseMetrics(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			rest = line[i+1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					return nil, fmt.Errorf("bad metrics line %q", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				for len(rest) > 0 && rest[0] != '"' {
					if rest[0] == '\\' && len(rest) > 1 {
						rest = rest[1:]
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				if rest == "" {
					return nil, fmt.Errorf("bad metrics line %q", line)
				}
				rest = rest[1:]
				s.labels[key] = val.String()
			}
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad metrics value in %q", line)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}
