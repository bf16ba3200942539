package config

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteAtomic through a symlink replaces the file it leads to and leaves
// the link a link (a refresh_token_file or keys file mounted from a
// Kubernetes Secret, or kept elsewhere); before, the rename replaced the
// link with a regular file and the target kept its old text.
func TestWriteAtomicThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real", "token")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "token")
	if err := os.Symlink(filepath.Join("real", "token"), link); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(link, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link is no longer a symlink: %v %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new\n" {
		t.Errorf("target holds %q, want the new text", b)
	}
	if st, _ := os.Stat(target); st.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v, want 0600", st.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, "real", ".token.*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// ReadRegular refuses a named pipe at once instead of waiting for a
// writer.
func TestReadRegularRefusesNamedPipe(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := mkfifo(fifo); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, err := ReadRegular(fifo, 1<<10); err == nil {
		t.Fatal("ReadRegular read a named pipe")
	}
}
