package testkit

import (
	"net"
	"os"
	"os/exec"
	"strconv"
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
	r.proc.WaitFor(r.t, 10*time.Second, "redis-server to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
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
