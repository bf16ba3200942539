package chaos

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// Issue 19 ("Trust"), the hostile upstream: black-box regression tests
// against the real binary for SPEC Part 3's "Every step under the route's
// clock" and "Hop-by-hop headers". They run under either transport
// ($BREAKWATER_TRANSPORT, as `make unit` runs the suites twice).

// stallRoute is how long the route lets an attempt take: the stall of a
// discarded body would last that long.
const stallRoute = "10s"

// stallingFirst is an upstream whose first answer is a 503 that promises
// 100 bytes of body, sends 5 and then stalls (until the peer closes the
// connection); every later request gets a quick 200 "ok".
func stallingFirst(t *testing.T) (url string, requests *atomic.Int64) {
	requests = new(atomic.Int64)
	url = rawUpstream(t, func(conn net.Conn, _ *http.Request) bool {
		if requests.Add(1) == 1 {
			_, _ = io.WriteString(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nstall")
			_, _ = io.Copy(io.Discard, conn) // until breakwater closes it
			conn.Close()
			return false
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	return url, requests
}

// quickOK asks b for /x and wants the second attempt's 200, far inside
// the stall of the first one's body.
func quickOK(t *testing.T, what string, b *bw, requests *atomic.Int64) {
	t.Helper()
	a := get(client(30*time.Second), b.URL+"/x")
	t.Logf("%s: %d %q %s after %s, %d upstream requests", what, a.status, a.body, a.kind, a.elapsed.Round(time.Millisecond), requests.Load())
	if a.err != nil || a.status != 200 || string(a.body) != "ok" {
		t.Fatalf("got %d %q (%s) %v, want the second attempt's 200", a.status, a.body, a.kind, a.err)
	}
	if a.elapsed > 2*time.Second {
		t.Errorf("answered after %s: the stalled body was waited for (the stall lasts %s)", a.elapsed, stallRoute)
	}
}

// Defect 5: a retried 503 whose body stalls. Before: 504 after the whole
// route timeout with one attempt, though the retry answers 200 at once.
// Now the retry's 200, far inside the stall.
func TestTrustStalledRetriedBodyDoesNotHoldTheRetry(t *testing.T) {
	url, requests := stallingFirst(t)
	b := startBW(t, testkit.OneRoute(url, `
    timeout: `+stallRoute+`
    retry: { attempts: 3, on: [503], backoff: { initial: 1ms } }
`))
	quickOK(t, "stalled 503 then a retry", b, requests)
	if n := requests.Load(); n != 2 {
		t.Errorf("%d upstream requests, want 2", n)
	}
}

// Defect 5, hedged: the first attempt's 503 stalls, the hedge answers
// 200. Before: the hedge won, and the client still got 504 after the
// route timeout. Now the hedge's 200 at once.
func TestTrustStalledLoserDoesNotDelayTheWinningHedge(t *testing.T) {
	url, requests := stallingFirst(t)
	b := startBW(t, testkit.OneRoute(url, `
    timeout: `+stallRoute+`
    retry: off
    hedge: { delay: 20ms, max: 1 }
`))
	quickOK(t, "stalled 503 and a hedge", b, requests)
}

// Defect 9: on an https upstream (always net/http's transport, the main
// egress case) "Connection: close, X-Internal-Token" let X-Internal-Token
// reach the client. Now it is removed, as every header named in
// Connection, and what the client names in Connection does not reach
// the upstream either.
func TestTrustConnectionNamedHeadersOnAnHTTPSUpstream(t *testing.T) {
	var leaked atomic.Int64 // requests on which the upstream saw X-Foo
	up := testkit.RawTLSUpstream(t, func(r *http.Request) string {
		if r.Header.Get("X-Foo") != "" {
			leaked.Add(1)
		}
		connection := strings.ReplaceAll(strings.TrimPrefix(r.URL.Path, "/"), "_", ", ")
		return "HTTP/1.1 200 OK\r\nConnection: " + connection +
			"\r\nX-Internal-Token: s3cret\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
	})
	b := startBW(t, `
upstreams:
  up: { url: "`+up.URL+`", tls: { insecure_skip_verify: true } }
routes:
  - { name: r, match: { path_prefix: / }, upstream: up, retry: off }
`)
	c := client(10 * time.Second)
	for _, connection := range []string{"close, X-Internal-Token", "X-Internal-Token, close", "X-Internal-Token", "keep-alive, X-Internal-Token"} {
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/"+strings.ReplaceAll(connection, ", ", "_"), nil)
		req.Header.Set("Connection", "X-Foo")
		req.Header.Set("X-Foo", "secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("upstream Connection: %-30s → %d %q, X-Internal-Token %q", connection, resp.StatusCode, body, resp.Header.Values("X-Internal-Token"))
		if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Kept") != "yes" {
			t.Errorf("Connection: %s: %d %q X-Kept %q, want the upstream's 200 with X-Kept", connection, resp.StatusCode, body, resp.Header.Get("X-Kept"))
		}
		if v := resp.Header.Values("X-Internal-Token"); len(v) > 0 {
			t.Errorf("upstream Connection: %s: X-Internal-Token %q reached the client", connection, v)
		}
	}
	if n := leaked.Load(); n > 0 {
		t.Errorf("the upstream saw the client's Connection-named X-Foo on %d requests", n)
	}
}
