//go:build unix

package transport

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// H1 against net/http's Transport (configured as NewBase does),
// in front of the same tiny loopback upstream, with requests shaped as
// ReverseProxy sends them (cancellable context, a 1xx trace, User-Agent
// suppressed).
//
//	go test -run='^$' -bench='H1|StdTransport' -benchmem -count=3 ./upstream/
//
// cpu-ns/op is the process's user+system CPU time per request (client,
// transport and upstream together), which a busy machine disturbs far
// less than wall time.

const benchAnswer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n" +
	"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// benchUpstream answers every request at once, reading no more than it
// must, so that the transports' cost dominates.
func benchUpstream(b *testing.B) string {
	u := serveRaw(b, func(nc net.Conn, br *bufio.Reader, _ int) {
		for {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := io.WriteString(nc, benchAnswer); err != nil {
				return
			}
		}
	})
	return u.url
}

func benchStandard() *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

func benchSettings() Settings {
	return Settings{ConnectTimeout: 5 * time.Second, ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns: 64, IdleConnTimeout: 90 * time.Second}
}

func benchRequest(b *testing.B, url string) *http.Request {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil },
	})
	req, err := http.NewRequestWithContext(ctx, "GET", url+"/api/items?page=2", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header["User-Agent"] = []string{""}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Request-Id", "0123456789abcdef")
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	return req
}

func benchRoundTrips(b *testing.B, rt http.RoundTripper) {
	req := benchRequest(b, benchUpstream(b))
	buf := make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testkit.ProcessCPU()
	for range b.N {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:64])
		resp.Body.Read(buf) // the EOF that frees the connection
		resp.Body.Close()
		if n != 64 {
			b.Fatalf("%d bytes", n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(testkit.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

func benchRoundTripsParallel(b *testing.B, rt http.RoundTripper) {
	url := benchUpstream(b)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	cpu0 := testkit.ProcessCPU()
	defer func() { b.ReportMetric(float64(testkit.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(b, url)
		buf := make([]byte, 1024)
		for pb.Next() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.ReadFull(resp.Body, buf[:64])
			resp.Body.Read(buf)
			resp.Body.Close()
		}
	})
}

func BenchmarkH1(b *testing.B) {
	tr := NewH1(benchSettings())
	defer tr.CloseIdleConnections()
	benchRoundTrips(b, tr)
}

func BenchmarkStdTransport(b *testing.B) {
	tr := benchStandard()
	defer tr.CloseIdleConnections()
	benchRoundTrips(b, tr)
}

func BenchmarkH1Parallel(b *testing.B) {
	tr := NewH1(benchSettings())
	defer tr.CloseIdleConnections()
	benchRoundTripsParallel(b, tr)
}

func BenchmarkStdTransportParallel(b *testing.B) {
	tr := benchStandard()
	defer tr.CloseIdleConnections()
	benchRoundTripsParallel(b, tr)
}
