// Command demo shows what breakwater does for a client of a flaky API.
//
// It starts a small bundled API on loopback that fails the way real ones
// do (random 503s, slow answers, a hard quota answered with 429 and
// Retry-After, and a full outage of a few seconds in the middle), then
// sends the same traffic twice: once straight at the API, once through a
// breakwater binary built from this repository and configured by
// breakwater.yaml next to this file. It prints both sides next to each
// other, with what breakwater's admin listener says it did, then stops
// everything it started.
//
//	go run ./examples/demo            # or: make demo
//	go run ./examples/demo -short     # 5 s per side
//
// It needs nothing but Go.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long each side sends traffic")
	short := flag.Bool("short", os.Getenv("BREAKWATER_DEMO_SHORT") != "", "5 s per side (also $BREAKWATER_DEMO_SHORT)")
	flag.IntVar(&o.clients, "clients", 6, "concurrent clients")
	flag.StringVar(&o.binary, "breakwater", "", "a breakwater binary to use instead of building one")
	flag.StringVar(&o.config, "config", "", "breakwater config (default examples/demo/breakwater.yaml)")
	flag.Parse()
	if *short {
		o.duration = 5 * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o, os.Stdout); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "demo: interrupted; everything it started is stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	duration time.Duration
	clients  int
	binary   string // "" = go build one into a temp dir
	config   string // "" = breakwater.yaml in this directory
}

// api returns the flaky API's settings for a run of d: the outage covers
// 40%–65% of the run, and another client burns the shared quota for 5%
// of it from 80% on.
func (o options) api() *flakyAPI {
	return &flakyAPI{
		outageFrom: o.duration * 40 / 100,
		outageTo:   o.duration * 65 / 100,
		burnFrom:   o.duration * 80 / 100,
		burnTo:     o.duration * 85 / 100,
		quota:      25,
		failRate:   0.20,
		slowRate:   0.05,
		slowDelay:  1500 * time.Millisecond,
	}
}

// result is both sides of one demo run.
type result struct {
	direct, through       *tally
	directAPI, throughAPI *flakyAPI
	admin                 *adminStats
}

// run does the whole demo and writes the summary to out.
func run(ctx context.Context, o options, out io.Writer) (*result, error) {
	if o.clients <= 0 {
		o.clients = 6
	}
	if o.duration <= 0 {
		o.duration = 20 * time.Second
	}
	start := time.Now()
	bin, cfg := o.binary, o.config
	if bin == "" || cfg == "" {
		root, err := moduleRoot(ctx)
		if err != nil {
			return nil, err
		}
		if cfg == "" {
			cfg = filepath.Join(root, "examples", "demo", "breakwater.yaml")
		}
		if bin == "" {
			dir, err := os.MkdirTemp("", "breakwater-demo-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			fmt.Fprintln(out, "building breakwater …")
			if bin, err = buildBreakwater(ctx, root, dir); err != nil {
				return nil, err
			}
		}
	}
	tr := traffic{clients: o.clients, timeout: 10 * time.Second}
	res := &result{directAPI: o.api(), throughAPI: o.api()}
	a := res.directAPI
	fmt.Fprintf(out, "the API: %.0f%% 503s, %.0f%% slow (%s), %d req/s quota (then 429 + Retry-After),\n"+
		"         down from %s to %s, quota used up by someone else from %s to %s\n",
		a.failRate*100, a.slowRate*100, a.slowDelay, a.quota, a.outageFrom, a.outageTo, a.burnFrom, a.burnTo)
	fmt.Fprintf(out, "traffic: %d clients for %s per side: item reads (cacheable), recommendations, order POSTs\n", o.clients, o.duration)

	// Side 1: straight at the API.
	if err := startFlakyAPI(res.directAPI); err != nil {
		return nil, err
	}
	res.direct = sendFor(ctx, o.duration, tr, res.directAPI, res.directAPI.url)
	res.directAPI.close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Side 2: through breakwater.
	if err := startFlakyAPI(res.throughAPI); err != nil {
		return nil, err
	}
	defer res.throughAPI.close()
	bw, err := startBreakwater(ctx, bin, cfg, res.throughAPI.url)
	if err != nil {
		return nil, err
	}
	defer bw.stop()
	res.through = sendFor(ctx, o.duration, tr, res.throughAPI, "http://"+bw.listen)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if res.admin, err = bw.stats(); err != nil {
		return nil, fmt.Errorf("reading breakwater's admin API: %w", err)
	}
	bw.stop()
	select {
	case <-bw.exited:
	default:
		return nil, fmt.Errorf("breakwater did not stop")
	}
	if bw.waitErr != nil {
		return nil, fmt.Errorf("breakwater exited with %v:\n%s", bw.waitErr, bw.logText())
	}
	res.print(out)
	fmt.Fprintf(out, "done in %s; everything the demo started is stopped.\n", time.Since(start).Round(time.Second))
	return res, nil
}

// sendFor runs the traffic against base for d, with the API's outage clock
// starting now.
func sendFor(ctx context.Context, d time.Duration, tr traffic, api *flakyAPI, base string) *tally {
	api.restartClock()
	run, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return tr.run(run, ctx, base)
}

func (r *result) print(out io.Writer) {
	d, t, s := r.direct, r.through, r.admin
	row := func(label, direct, through string) {
		fmt.Fprintf(out, "  %-24s %-22s %s\n", label, direct, through)
	}
	errs := func(t *tally) string {
		return fmt.Sprintf("%d (%.1f%%)", t.errors, 100*float64(t.errors)/float64(max(t.requests, 1)))
	}
	lat := func(t *tally) string { return fmt.Sprintf("%s / %s", ms(t.p(0.50)), ms(t.p(0.99))) }
	fmt.Fprintln(out)
	row("", "direct", "through breakwater")
	row("requests", fmt.Sprint(d.requests), fmt.Sprint(t.requests))
	row("client-visible errors", errs(d), errs(t))
	row("latency p50 / p99", lat(d), lat(t))
	row("upstream attempts", fmt.Sprint(r.directAPI.received.Load()),
		fmt.Sprintf("%d (%.0f retries)", r.throughAPI.received.Load(), s.retries))
	row("429s from the API", fmt.Sprint(r.directAPI.tooMany.Load()), fmt.Sprint(r.throughAPI.tooMany.Load()))
	row("answered by breakwater", "-", fmt.Sprintf("%.0f cache hits, %.0f stale, %.0f fallback", s.cacheHits, s.stale, s.fallback))
	row("circuit breaker", "-", breakerLine(s))
	avg := 0.0
	if s.quotaWaits > 0 {
		avg = s.quotaWaitSeconds / s.quotaWaits
	}
	row("upstream quota", "-", fmt.Sprintf("%.0f waits (avg %s), %s for Retry-After, %.0f gave up",
		s.quotaWaits, ms(time.Duration(avg*float64(time.Second))), plural(s.pauses, "pause"), s.quotaExhausted))
	fmt.Fprintln(out)
}

// breakerLine counts transitions by the state entered, e.g. "opened 2×,
// half-open 2×, closed 2×; shop now closed".
func breakerLine(s *adminStats) string {
	entered := map[string]float64{}
	for _, t := range s.transitions {
		entered[t.to] += t.n
	}
	line := fmt.Sprintf("opened %.0f×, half-open %.0f×, closed %.0f×", entered["open"], entered["half-open"], entered["closed"])
	var now []string
	for _, b := range s.breakers {
		now = append(now, b.Name+" now "+b.State)
	}
	if len(now) > 0 {
		line += "; " + strings.Join(now, ", ")
	}
	return line
}

// plural writes "1 pause", "2 pauses".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
}
