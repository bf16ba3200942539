package main

import (
	"bytes"
	"crypto/sha256"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// pollEvery is the backstop for file watching: inotify misses changes on
// some volumes, and a ConfigMap update swaps a ..data symlink rather than
// writing the file.
const pollEvery = 2 * time.Second

// watchFile calls changed when the content of path changes. It watches the
// directory, not the file: editors replace the file (a new inode), and
// Kubernetes swaps the ..data symlink the file points through. Events are
// debounced, and a poll compares content as a backstop. It returns a stop
// function.
func watchFile(path string, log zerolog.Logger, changed func()) func() {
	last := fileSum(path)
	check := func() {
		if sum := fileSum(path); sum != nil && !bytes.Equal(sum, last) {
			last = sum
			changed()
		}
	}
	done := make(chan struct{})
	w, err := fsnotify.NewWatcher()
	var events chan fsnotify.Event
	if err == nil {
		if err = w.Add(filepath.Dir(path)); err != nil {
			w.Close()
		} else {
			events = w.Events
		}
	}
	if err != nil {
		log.Warn().Err(err).Msg("cannot watch the config directory: polling only")
	}
	go func() {
		tick := time.NewTicker(pollEvery)
		defer tick.Stop()
		var debounce <-chan time.Time
		for {
			select {
			case <-done:
				return
			case _, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				debounce = time.After(100 * time.Millisecond)
			case <-debounce:
				debounce = nil
				check()
			case <-tick.C:
				check()
			}
		}
	}()
	return func() {
		close(done)
		if w != nil && events != nil {
			w.Close()
		}
	}
}

// fileSum hashes the file's content; nil when it cannot be read (mid-swap).
func fileSum(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}

// newStdLogger routes net/http's own error log (TLS handshakes, header
// parse errors) into zerolog at debug level.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zerologWriter{l}, "", 0)
}

type zerologWriter struct{ l zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.l.Debug().Msg(string(bytes.TrimSpace(p)))
	return len(p), nil
}
