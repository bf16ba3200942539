//go:build pprof

package main

// A build with -tags pprof serves net/http/pprof on $BREAKWATER_PPROF (a
// loopback address), for profiling the real binary under bench/run.sh's
// load: `make profile`. Release builds never link it.

import (
	"net"
	"net/http"
	_ "net/http/pprof" // the handlers, on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("BREAKWATER_PPROF")
	if addr == "" {
		return
	}
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		os.Stderr.WriteString("breakwater: BREAKWATER_PPROF must be a loopback host:port\n")
		os.Exit(2)
	}
	go func() { _ = http.ListenAndServe(addr, nil) }()
}
