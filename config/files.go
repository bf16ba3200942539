package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// maxPEMSize bounds a CA bundle (Debian's whole bundle is about 220 KiB).
const maxPEMSize = 4 << 20

// ErrTooLarge is ReadRegular's error for a file larger than its limit.
var ErrTooLarge = errors.New("the file is too large")

// ReadRegular reads the file at path, of at most limit bytes (else
// ErrTooLarge, without reading it). The file must be regular,
// or a symlink to one: a named pipe would block the open until a writer
// comes, maybe never, and a device or a directory holds no file's text.
// The file is checked before it is opened (opening a named pipe is what
// blocks), opened without blocking, and checked again once open, so that
// one swapped in between is refused too. Errors never name the path: the
// caller says which file it read and why.
func ReadRegular(path string, limit int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, bare(err)
	}
	if err := regular(st.Mode()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, bare(err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, bare(err)
	}
	if err := regular(st.Mode()); err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, ErrTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	switch {
	case err != nil:
		return nil, bare(err)
	case int64(len(b)) > limit: // it grew since the Stat
		return nil, ErrTooLarge
	}
	return b, nil
}

// regular refuses any mode but a regular file's, saying what it is.
func regular(m fs.FileMode) error {
	if m.IsRegular() {
		return nil
	}
	kind := "a special file"
	switch {
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	}
	return errors.New("not a regular file (" + kind + ")")
}

// bare is err without the path an *fs.PathError names.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkRegular is a problem at path when file exists and is not a regular
// file; a missing file is for its reader to report (a keys file's own
// problems, a refresh_token_file that `oauth2 login` writes).
func (v *validator) checkRegular(path, file string) {
	if file == "" {
		return
	}
	if st, err := os.Stat(file); err == nil {
		if err := regular(st.Mode()); err != nil {
			v.errorf(path, "%s: %v", file, err)
		}
	}
}

// keysFileMode warns about a keys file that group or others may write:
// whoever can write it can add a client of any tier.
func (v *validator) keysFileMode(file string) {
	if file == "" {
		return
	}
	if st, err := os.Stat(file); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o022 != 0 {
		v.warnf("clients.keys_file", "%s is writable by group or others (mode %04o): anyone who can write it can add a client; chmod go-w it", file, st.Mode().Perm())
	}
}

// maxLinks bounds the symlinks LinkTarget follows, as the kernel does.
const maxLinks = 40

// linkTarget is the file path names once symlinks are followed: where a
// rewrite must go for the link to stay a link. A link to a file not there
// yet names where it is to be created.
func LinkTarget(path string) (string, error) {
	if t, err := filepath.EvalSymlinks(path); err == nil {
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	for range maxLinks {
		st, err := os.Lstat(path)
		if err != nil || st.Mode()&fs.ModeSymlink == 0 {
			return path, nil
		}
		dest, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(path), dest)
		}
		path = dest
	}
	return "", fmt.Errorf("%s: more than %d symlinks in a row", path, maxLinks)
}

// WriteAtomic replaces the file path names with data, at mode: written
// to a temporary file beside it, synced, then renamed over it, so that a
// reader sees the old text or the new, never half. A symlink stays a
// symlink: the file it leads to is the one replaced (a Kubernetes Secret
// mount, a keys file kept elsewhere).
func WriteAtomic(path string, data []byte, mode fs.FileMode) error {
	path, err := LinkTarget(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
