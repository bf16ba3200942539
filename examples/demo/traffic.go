package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// traffic is what every client does, the same on both sides: in a loop
// until the context ends, pick a request (65% catalogue reads over a dozen
// items, 20% personalised recommendations, 15% orders), send it, then
// think for 100–200 ms.
type traffic struct {
	clients int
	timeout time.Duration // per request, on the client side
}

// tally is what the clients saw.
type tally struct {
	requests int
	errors   int // transport errors, 429s and 5xx: what a caller would have to handle
	latency  []time.Duration
}

func (t *tally) p(q float64) time.Duration {
	if len(t.latency) == 0 {
		return 0
	}
	s := slices.Clone(t.latency)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// run sends traffic to base (a URL without a trailing slash) until ctx
// ends; requests in flight then finish, unless stop ends first.
func (tr traffic) run(ctx, stop context.Context, base string) *tally {
	client := &http.Client{
		Timeout:   tr.timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: tr.clients, DisableCompression: true},
	}
	defer client.CloseIdleConnections()
	var (
		mu  sync.Mutex
		out tally
		wg  sync.WaitGroup
	)
	for c := range tr.clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				req := newRequest(stop, base, c)
				start := time.Now()
				ok := send(client, req)
				took := time.Since(start)
				mu.Lock()
				out.requests++
				out.latency = append(out.latency, took)
				if !ok {
					out.errors++
				}
				mu.Unlock()
				think := time.NewTimer(time.Duration(100+mrand.IntN(100)) * time.Millisecond)
				select {
				case <-ctx.Done():
				case <-think.C:
				}
				think.Stop()
			}
		})
	}
	wg.Wait()
	return &out
}

func newRequest(ctx context.Context, base string, client int) *http.Request {
	var req *http.Request
	switch p := mrand.Float64(); {
	case p < 0.65:
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/items/%d", base, mrand.IntN(12)), nil)
	case p < 0.85:
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/recommendations?user=%d", base, client), nil)
	default:
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, base+"/orders", strings.NewReader(`{"item":"7","quantity":1}`))
		req.Header.Set("Content-Type", "application/json")
		key := make([]byte, 8)
		_, _ = rand.Read(key)
		req.Header.Set("Idempotency-Key", hex.EncodeToString(key))
	}
	return req
}

// send reports whether the answer was usable: no transport error, no 429,
// no 5xx.
func send(c *http.Client, req *http.Request) bool {
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests
}
