package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// TestEveryStderrLineIsJSONE2E (issue 11, defect 11): net/http's Transport
// logs an upstream's unsolicited response on an idle keep-alive connection
// through the standard log package; that line too must be JSON.
func TestEveryStderrLineIsJSONE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	// An upstream that answers, then, with the connection idle in the
	// proxy's pool, sends a second response nobody asked for.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				time.Sleep(300 * time.Millisecond)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Unasked: yes\r\n\r\n")
				time.Sleep(5 * time.Second)
			}()
		}
	}()
	dir := t.TempDir()
	file := writeFile(t, dir, "breakwater.yaml", `version: 1
listen: 127.0.0.1:0
admin: { listen: "localhost:0" }
upstreams:
  up: { url: "http://`+ln.Addr().String()+`" }
routes:
  - { name: all, match: { path_prefix: / }, upstream: up }
`)
	cmd := exec.Command(binary, "-config", file)
	cmd.Env = env()
	p := testkit.Start(t, cmd)
	data, _ := p.WaitStarted(t, 15*time.Second)
	// A body of unknown length goes upstream chunked, through net/http's
	// transport (the lean HTTP/1.1 one reads no idle connection and logs
	// nothing; see transport.Dual.Path).
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+data+"/x", "text/plain", io.MultiReader(strings.NewReader("hi")))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /x: %d", resp.StatusCode)
	}
	p.WaitFor(t, 15*time.Second, "the transport's complaint", func() bool {
		return strings.Contains(p.Out.String(), "Unsolicited response")
	})
	p.Signal(t, syscall.SIGTERM)
	if code := p.ExitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for _, line := range strings.Split(strings.TrimRight(p.Out.String(), "\n"), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("not a JSON line: %q", line)
			continue
		}
		if strings.Contains(line, "Unsolicited response") && l["level"] != "warn" {
			t.Errorf("the transport's complaint at level %v, want warn: %s", l["level"], line)
		}
	}
}
