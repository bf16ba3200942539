// Command upstream is the benchmark's origin: a loopback HTTP/1.1 server
// that answers every request with the same 64 bytes. It is the "direct"
// row of bench/results.md and the upstream of every proxy measured.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

var payload = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	length := strconv.Itoa(len(payload))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{length}
			_, _ = w.Write(payload)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute, // longer than any proxy's idle_conn_timeout
	}
	log.Fatal(srv.Serve(ln))
}
