// Command fleet is `make demo-fleet`: three breakwater replicas in front
// of one API whose quota is 25 requests per wall-clock second (429 with
// Retry-After above it), first each with its own quota of 22/s, then
// sharing one through Redis. Each replica's clients send a burst of 12
// requests every 2 s (18/s on average in all, 36 at once at the peaks).
// It prints both acts side by side: what the API saw and what the clients
// got. It starts and stops its own redis-server (`make redis-deps`).
//
//	go run ./examples/demo/fleet -binary bin/breakwater [-seconds 10]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	replicas   = 3
	apiQuota   = 25 // the API's own limit, per wall-clock second
	burstEvery = 2 * time.Second
	burstSize  = 12 // per replica
)

// api counts requests per wall-clock second and refuses those above quota.
type api struct {
	mu      sync.Mutex
	second  int64
	inSec   int
	total   atomic.Int64
	refused atomic.Int64
	busiest atomic.Int64 // the most requests in one second
}

func (a *api) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.total.Add(1)
	now := time.Now().Unix()
	a.mu.Lock()
	if now != a.second {
		a.second, a.inSec = now, 0
	}
	a.inSec++
	over := a.inSec > apiQuota
	if int64(a.inSec) > a.busiest.Load() {
		a.busiest.Store(int64(a.inSec))
	}
	a.mu.Unlock()
	if over {
		a.refused.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	}
	_, _ = io.WriteString(w, `{"ok":true}`)
}

type result struct {
	sent, upstream, refused, failed, busiest int64
	seconds                                  float64
}

func main() {
	bin := flag.String("binary", "bin/breakwater", "the breakwater binary (make build)")
	secs := flag.Int("seconds", 20, "how long each act sends traffic")
	flag.Parse()
	if _, err := exec.LookPath("redis-server"); err != nil {
		fmt.Fprintln(os.Stderr, "fleet: redis-server is not installed: run make redis-deps")
		os.Exit(1)
	}
	redisAddr := freeAddr()
	_, port, _ := net.SplitHostPort(redisAddr)
	redis := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := redis.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
	defer func() { _ = redis.Process.Kill(); _ = redis.Wait() }()

	a := &api{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return
	}
	srv := &http.Server{Handler: a}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	d := time.Duration(*secs) * time.Second
	without, err := act(*bin, "http://"+ln.Addr().String(), "", a, d)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return
	}
	with, err := act(*bin, "http://"+ln.Addr().String(), "redis://"+redisAddr+"/0", a, d)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return
	}
	fmt.Printf("\nthree replicas, one API (quota %d per second), bursts of %d×%d every %s, %s per act\n\n", apiQuota, replicas, burstSize, burstEvery, d)
	fmt.Printf("%-34s %16s %16s\n", "", "without store", "shared quota")
	row := func(name string, f func(r result) string) {
		fmt.Printf("%-34s %16s %16s\n", name, f(without), f(with))
	}
	row("requests sent by clients", func(r result) string { return fmt.Sprint(r.sent) })
	row("API: requests per second", func(r result) string { return fmt.Sprintf("%.1f", float64(r.upstream)/r.seconds) })
	row("API: busiest second", func(r result) string { return fmt.Sprint(r.busiest) })
	row("API: 429 answers", func(r result) string { return fmt.Sprint(r.refused) })
	row("clients: errors (non-2xx)", func(r result) string { return fmt.Sprint(r.failed) })
	fmt.Println()
}

// act runs three replicas (with a store when redisURL is set), offers the
// bursts for d, and stops them.
func act(bin, apiURL, redisURL string, a *api, d time.Duration) (result, error) {
	up0, ref0 := a.total.Load(), a.refused.Load()
	a.busiest.Store(0)
	var addrs []string
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	dir, err := os.MkdirTemp("", "breakwater-fleet-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	for i := range replicas {
		listen, admin := freeAddr(), freeAddr()
		store, shared := "", ""
		if redisURL != "" {
			store = fmt.Sprintf("store:\n  redis: { url: %s }\n  replicas: %d\n", redisURL, replicas)
			shared = ", shared: true"
		}
		cfg := fmt.Sprintf(`version: 1
listen: %s
admin: { listen: %s }
log: { level: warn, access_log: false }
%supstreams:
  api:
    url: %s
    quota: { rate: 22/1s, burst: 1, max_wait: 2s%s }
routes:
  - { name: api, match: { path_prefix: / }, upstream: api, retry: off, circuit_breaker: off }
`, listen, admin, store, apiURL, shared)
		file := filepath.Join(dir, fmt.Sprintf("r%d.yaml", i))
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			return result{}, err
		}
		cmd := exec.Command(bin, "run", "-config", file)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		procs = append(procs, cmd)
		addrs = append(addrs, listen)
		if err := waitReady(admin); err != nil {
			return result{}, err
		}
	}
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	for time.Since(start) < d {
		for _, addr := range addrs {
			for range burstSize {
				wg.Add(1)
				sent.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Get("http://" + addr + "/items")
					if err != nil {
						failed.Add(1)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						failed.Add(1)
					}
				}()
			}
		}
		time.Sleep(burstEvery)
	}
	wg.Wait()
	return result{sent: sent.Load(), upstream: a.total.Load() - up0, refused: a.refused.Load() - ref0,
		failed: failed.Load(), busiest: a.busiest.Load(), seconds: time.Since(start).Seconds()}, nil
}

func waitReady(admin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("breakwater on %s not ready: %s", admin, strings.TrimSpace("timeout"))
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
