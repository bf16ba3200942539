package testkit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// mainPackage is breakwater's main package; `go build` finds it from any
// directory of the module.
const mainPackage = "github.com/breakwater-proxy/breakwater"

// GoTool is the go command: the one on PATH, else the one the tests were
// built with.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// BuildBinary builds breakwater into dir with extra `go build` flags
// (-race, -ldflags …) and returns the binary's path.
func BuildBinary(dir string, flags ...string) (string, error) {
	bin := filepath.Join(dir, "breakwater")
	args := append(append([]string{"build", "-o", bin}, flags...), mainPackage)
	if out, err := exec.Command(GoTool(), args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// RunWithBinary is for TestMain: it builds breakwater once into a new
// temporary directory (BuildBinary with flags), sets *bin to its path,
// runs the tests and removes the directory. It returns the code for
// os.Exit: m.Run's, or 1 when the build failed.
func RunWithBinary(m *testing.M, bin *string, flags ...string) int {
	dir, err := os.MkdirTemp("", "breakwater-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildBinary(dir, flags...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Process is a binary running in the background, its stdout and stderr
// collected in Out.
type Process struct {
	Cmd    *exec.Cmd
	Out    *SyncBuffer
	exited chan struct{}
}

// errExited is what a wait returns when the process ends first.
var errExited = errors.New("exited")

// Start starts cmd, its stdout and stderr going to Out. When the test ends
// the process is killed if it still runs, and the end of its output is
// logged if the test failed.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Out: &SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s's output (last 4 KiB):\n%s", p.name(), tail(p.Out.String(), 4096))
		}
	})
	return p
}

func (p *Process) name() string { return filepath.Base(p.Cmd.Path) }

// Exited is closed when the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Kill kills the process, unless it has ended, and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// ExitCode waits for the process to end and returns its exit code (-1 if
// a signal ended it); it fails the test if the process still runs after
// within.
func (p *Process) ExitCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("%s still running after %s", p.name(), within)
		return -1
	}
}

// poll checks cond every so often until it holds; it gives up when the
// process exits (errExited) or after within.
func (p *Process) poll(within, every time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		select {
		case <-p.exited:
			return errExited
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", within)
		}
		time.Sleep(every)
	}
	return nil
}

// WaitFor is the package's WaitFor that also fails at once if the process
// exits.
func (p *Process) WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := p.poll(within, pollEvery, cond); err != nil {
		t.Fatalf("%s %v waiting for %s", p.name(), err, what)
	}
}

// WaitStatus polls url until it answers want, and fails the test if the
// process exits first or within passes.
func (p *Process) WaitStatus(t testing.TB, url string, want int, within time.Duration) {
	t.Helper()
	if err := p.awaitStatus(url, want, within); err != nil {
		t.Fatal(err)
	}
}

func (p *Process) awaitStatus(url string, want int, within time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	last := "no answer"
	err := p.poll(within, 20*time.Millisecond, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == want
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("%s exited while waiting for %s to answer %d", p.name(), url, want)
	case err != nil:
		return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, within, last)
	}
	return nil
}

// WaitStarted waits for breakwater's "breakwater started" log line and
// returns the data and admin addresses it names (host:port), which is how
// a test learns the ports of a config that listens on :0.
func (p *Process) WaitStarted(t testing.TB, within time.Duration) (listen, admin string) {
	t.Helper()
	p.WaitFor(t, within, "the start-up line", func() bool {
		for _, line := range strings.Split(p.Out.String(), "\n") {
			var l struct{ Message, Listen, Admin string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "breakwater started" {
				listen, admin = l.Listen, l.Admin
				return listen != "" && admin != ""
			}
		}
		return false
	})
	return listen, admin
}

// Breakwater is a breakwater binary serving on two loopback ports.
type Breakwater struct {
	*Process
	URL   string // the data plane, http://127.0.0.1:PORT
	Admin string // the admin API, http://127.0.0.1:PORT
}

// StartBreakwater starts the command that command makes for two free
// loopback addresses, given to breakwater as -listen and -admin, and
// returns once the admin /readyz answers 200; it fails the test if that
// takes longer than ready. An address taken by another process between
// FreeAddr and breakwater's bind ("cannot bind") is picked again, up to
// three tries in all.
func StartBreakwater(t testing.TB, ready time.Duration, command func(listen, admin string) *exec.Cmd) *Breakwater {
	t.Helper()
	for try := 1; ; try++ {
		listen, admin := FreeAddr(t), FreeAddr(t)
		p := Start(t, command(listen, admin))
		err := p.awaitStatus("http://"+admin+"/readyz", http.StatusOK, ready)
		if err == nil {
			return &Breakwater{Process: p, URL: "http://" + listen, Admin: "http://" + admin}
		}
		p.Kill()
		if try < 3 && strings.Contains(p.Out.String(), "cannot bind") {
			continue
		}
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
