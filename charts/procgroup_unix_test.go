//go:build unix

package charts_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater-proxy/breakwater/internal/testkit"
)

// killGroupOnCancel runs cmd in a process group of its own and makes its
// context's cancellation kill that whole group: the go command's
// compilers and linker as well as the go command.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// A go install that outlives its context is killed with everything it
// started: here a stand-in for the go command that starts a compiler
// (sleep 300) and waits.
func TestGoInstallKilledWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	fakeGo := filepath.Join(dir, "go")
	pidFile := filepath.Join(dir, "compiler.pid")
	writeFile(t, fakeGo, "#!/bin/sh\nsleep 300 &\necho $! > "+pidFile+"\nwait\n")
	if err := os.Chmod(fakeGo, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := goInstall(ctx, fakeGo, dir, "example.com/never@v1.0.0")
	if took := time.Since(start); err == nil || took > 20*time.Second {
		t.Fatalf("goInstall returned %v after %s; want a kill soon after its 1s context", err, took)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the install's child process to be gone", func() bool {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	})
}
