package testkit

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a real redis-server for the shared-state tests: on a free port,
// with persistence off, stopped when the test ends.
type Redis struct {
	// Addr is host:port; URL is redis://Addr/0.
	Addr, URL string
	port      string
	t         testing.TB
	proc      *Process
}

// StartRedis starts redis-server (the Debian package that `make
// redis-deps` installs). Without it the test is skipped with a message
// saying so, except in CI (CI=true), where it fails: there the shared-state
// tests must run.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (run make redis-deps); CI must run the shared-state tests")
		}
		t.Skip("redis-server is not installed: run `make redis-deps` to run the shared-state tests")
	}
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	r := &Redis{Addr: addr, URL: "redis://" + addr + "/0", port: port, t: t}
	r.Start()
	return r
}

// Start (re)starts the server on its port and waits until it accepts
// connections.
func (r *Redis) Start() {
	r.t.Helper()
	r.proc = Start(r.t, exec.Command("redis-server", "--port", r.port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no"))
	r.proc.WaitFor(r.t, 10*time.Second, "redis-server to accept connections", accepting(r.Addr))
}

// Kill ends the server at once (SIGKILL): its state is gone.
func (r *Redis) Kill() { r.proc.Kill() }

// Pause stops the server (SIGSTOP): connections stay open and nothing is
// answered, a slow store rather than a refused one. Resume undoes it.
func (r *Redis) Pause() { _ = r.proc.Cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *Redis) Resume() { _ = r.proc.Cmd.Process.Signal(syscall.SIGCONT) }

// Port is the server's TCP port.
func (r *Redis) Port() int { p, _ := strconv.Atoi(r.port); return p }

// StartSentinel starts a redis-sentinel watching the master at
// masterAddr under name, and returns its address.
func StartSentinel(t testing.TB, name, masterAddr string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(masterAddr)
	addr := FreeAddr(t)
	_, sport, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	text := "port " + sport + "\nbind 127.0.0.1\nprotected-mode no\nsentinel monitor " + name + " " + host + " " + port + " 1\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := Start(t, exec.Command("redis-server", conf, "--sentinel"))
	p.WaitFor(t, 10*time.Second, "redis-sentinel to accept connections", accepting(addr))
	return addr
}

// StartCluster starts a one-node Redis Cluster (cluster mode on, every
// slot assigned to the node) and returns its address: enough to show
// that keys of one script share a slot.
func StartCluster(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not installed (Debian package redis-tools, a dependency of redis-server)")
	}
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	p := Start(t, exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--dir", dir))
	p.WaitFor(t, 10*time.Second, "redis-server (cluster) to accept connections", accepting(addr))
	if out, err := exec.Command("redis-cli", "-p", port, "cluster", "addslotsrange", "0", "16383").CombinedOutput(); err != nil {
		t.Fatalf("cluster addslotsrange: %v %s", err, out)
	}
	p.WaitFor(t, 10*time.Second, "the cluster to be ok", func() bool {
		out, _ := exec.Command("redis-cli", "-p", port, "cluster", "info").Output()
		return strings.Contains(string(out), "cluster_state:ok")
	})
	return addr
}

// accepting is a WaitFor condition: addr accepts TCP connections.
func accepting(addr string) func() bool {
	return func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
}
