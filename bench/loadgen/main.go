// Command loadgen is the benchmark's load generator: a small HTTP/1.1
// client over a fixed set of keep-alive connections. It prints one JSON
// object on stdout.
//
//	loadgen paced -url URL -rate 2000 -duration 10s -conns 32
//	    a fixed request rate, each connection on its own schedule (as wrk2
//	    does). A request held back by a slow answer before it on the same
//	    connection is timed from when it was *meant* to be sent, so a stall
//	    shows up in the percentiles instead of hiding in requests never sent
//	    (coordinated omission). A request sent late only because the load
//	    generator's own timer woke late is timed from its actual send: that
//	    delay is the client's, and on a busy box it would swamp the proxy's.
//	loadgen sat -url URL -duration 5s -conns 32
//	    as many requests as the connections can carry (a fallback for wrk).
//	loadgen hold -url URL -conns 1000
//	    opens that many connections, sends one request on each, keeps them
//	    open, prints {"open":N} and waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen paced|sat|hold [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	target := fs.String("url", "", "URL to request (http only)")
	rate := fs.Int("rate", 2000, "paced: requests per second")
	duration := fs.Duration("duration", 10*time.Second, "paced, sat: how long to measure")
	warmup := fs.Duration("warmup", time.Second, "paced: unmeasured run first, at the same rate")
	conns := fs.Int("conns", 32, "keep-alive connections")
	_ = fs.Parse(os.Args[2:])
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintf(os.Stderr, "loadgen: bad -url %q\n", *target)
		os.Exit(2)
	}
	path := u.RequestURI()
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: breakwater-loadgen\r\nAccept: */*\r\n\r\n")
	var out any
	switch mode {
	case "paced":
		if *warmup > 0 {
			paced(u.Host, req, *rate, *warmup, *conns)
		}
		out = paced(u.Host, req, *rate, *duration, *conns)
	case "sat":
		out = saturate(u.Host, req, *duration, *conns)
	case "hold":
		out = hold(u.Host, req, *conns)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown mode %q\n", mode)
		os.Exit(2)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

// conn is one keep-alive connection; it redials after an error or a
// "Connection: close".
type conn struct {
	addr string
	req  []byte
	c    net.Conn
	br   *bufio.Reader
}

// do sends one request and reads the whole response; it returns the status.
func (c *conn) do() (int, error) {
	if c.c == nil {
		nc, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		c.c, c.br = nc, bufio.NewReaderSize(nc, 4096)
	}
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(c.req); err != nil {
		c.close()
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close()
	}
	return resp.StatusCode, err
}

func (c *conn) close() {
	if c.c != nil {
		c.c.Close()
		c.c, c.br = nil, nil
	}
}

// PacedResult is what paced prints. Latencies are in microseconds.
type PacedResult struct {
	Rate        int     `json:"rate"`
	Sent        int     `json:"sent"`
	Errors      int     `json:"errors"`
	AchievedRPS float64 `json:"achieved_rps"`
	// From the intended send time when the previous answer on the
	// connection came after it (coordinated omission corrected), else
	// from the actual send.
	P50, P90, P99, P999, Max float64
	// From the actual send time (service time), for reference.
	ServiceP50 float64 `json:"service_p50"`
	ServiceP99 float64 `json:"service_p99"`
}

// paced runs rate requests per second for d over n connections. Connection
// i sends at start + i/rate + k·n/rate: the schedule does not wait for
// responses, so a slow answer delays the next send and that delay counts.
func paced(addr string, req []byte, rate int, d time.Duration, n int) PacedResult {
	interval := time.Second * time.Duration(n) / time.Duration(rate)
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(d)
	var mu sync.Mutex
	var lat, svc []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := &conn{addr: addr, req: req}
			defer c.close()
			my := make([]time.Duration, 0, int(d/interval)+2)
			mySvc := make([]time.Duration, 0, cap(my))
			var prevDone time.Time
			for k := 0; ; k++ {
				intended := start.Add(time.Second*time.Duration(i)/time.Duration(rate) + time.Duration(k)*interval)
				if !intended.Before(end) {
					break
				}
				if w := time.Until(intended); w > 0 {
					time.Sleep(w)
				}
				sent := time.Now()
				status, err := c.do()
				now := time.Now()
				if err != nil || status != http.StatusOK {
					errs.Add(1)
				}
				from := sent
				if prevDone.After(intended) {
					from = intended // held back by the server's previous answer
				}
				prevDone = now
				my = append(my, now.Sub(from))
				mySvc = append(mySvc, now.Sub(sent))
			}
			mu.Lock()
			lat, svc = append(lat, my...), append(svc, mySvc...)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	slices.Sort(svc)
	return PacedResult{
		Rate: rate, Sent: len(lat), Errors: int(errs.Load()),
		AchievedRPS: float64(len(lat)) / elapsed.Seconds(),
		P50:         pct(lat, 0.50), P90: pct(lat, 0.90), P99: pct(lat, 0.99), P999: pct(lat, 0.999),
		Max:        pct(lat, 1),
		ServiceP50: pct(svc, 0.50), ServiceP99: pct(svc, 0.99),
	}
}

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

// SatResult is what sat prints.
type SatResult struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"rps"`
}

func saturate(addr string, req []byte, d time.Duration, n int) SatResult {
	var ok, errs atomic.Int64
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &conn{addr: addr, req: req}
			defer c.close()
			for time.Now().Before(end) {
				if status, err := c.do(); err != nil || status != http.StatusOK {
					errs.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	total := ok.Load() + errs.Load()
	return SatResult{Requests: int(total), Errors: int(errs.Load()), RPS: float64(total) / time.Since(start).Seconds()}
}

// HoldResult is what hold prints once its connections are open.
type HoldResult struct {
	Open   int `json:"open"`
	Errors int `json:"errors"`
}

func hold(addr string, req []byte, n int) HoldResult {
	conns := make([]*conn, 0, n)
	errs := 0
	for i := 0; i < n; i++ {
		c := &conn{addr: addr, req: req}
		if status, err := c.do(); err != nil || status != http.StatusOK || c.c == nil {
			errs++
			c.close()
			continue
		}
		_ = c.c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	res := HoldResult{Open: len(conns), Errors: errs}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	// Held until the runner closes our stdin.
	_, _ = io.Copy(io.Discard, os.Stdin)
	alive := 0
	for _, c := range conns {
		// A connection the server closed meanwhile reads EOF at once.
		_ = c.c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.br.Peek(1); errors.Is(err, os.ErrDeadlineExceeded) {
			alive++
		}
		c.close()
	}
	res.Open = alive
	return res
}
