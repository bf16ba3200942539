package reload

import (
	"bytes"
	"crypto/sha256"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
)

// PollEvery is the backstop of Watch: inotify does not see every change
// (network and some container volumes), and a file reached through a
// symlink in another directory changes without an event in ours.
const PollEvery = 2 * time.Second

// settle is how long Watch waits after the last event before reading the
// file: an editor's save or a ConfigMap update is several events.
const settle = 100 * time.Millisecond

// Watch reloads the file whenever its content changes, or that of a file
// it names in ${file:…} (files.go), until stop is called. See WatchFile.
func (r *Reloader) Watch(poll time.Duration) (stop func()) {
	if r.path == "" {
		return func() {}
	}
	stopConfig := WatchFile(r.path, poll, r.log, func() { _, _ = r.Reload("file changed") })
	stopFiles := r.watchNamedFiles(poll)
	return func() { stopConfig(); stopFiles() }
}

// WatchFile calls changed (on its own goroutine, one call at a time) when
// the content of path changes. It watches the directory, not the file:
// editors write a temporary file and rename it over the old one (a new
// inode, which a watch on the file itself would lose), and Kubernetes
// updates a ConfigMap volume by pointing the ..data symlink, through which
// the file is reached, at a new directory. Events are only a hint: after
// they settle the content is compared with the last seen, and a poll every
// poll (PollEvery when 0) does the same as a backstop. A file that cannot
// be read (mid-swap, deleted) is not a change; its return is. The returned
// stop waits until no call of changed is running.
func WatchFile(path string, poll time.Duration, log zerolog.Logger, changed func()) (stop func()) {
	if poll <= 0 {
		poll = PollEvery
	}
	last := fileSum(path)
	check := func() {
		if sum := fileSum(path); sum != nil && !bytes.Equal(sum, last) {
			last = sum
			log.Info().Str("config", path).Msg("config file changed: reloading")
			changed()
		}
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(filepath.Dir(path)); err != nil {
			_ = w.Close()
			w = nil
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	if err != nil {
		log.Warn().Err(err).Str("config", path).Msg("cannot watch the config directory: polling only")
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(poll)
		defer tick.Stop()
		var debounce *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-done:
				if debounce != nil {
					debounce.Stop()
				}
				return
			case _, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				if debounce == nil {
					debounce = time.NewTimer(settle)
				} else {
					debounce.Reset(settle)
				}
				fire = debounce.C
			case err, ok := <-errs:
				// fsnotify's errors must be read, or its events stall.
				if !ok {
					errs = nil
					continue
				}
				log.Warn().Err(err).Str("config", path).Msg("config watch error: polling continues")
			case <-fire:
				fire = nil
				check()
			case <-tick.C:
				check()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			if w != nil {
				_ = w.Close()
			}
			wg.Wait()
		})
	}
}

// maxWatched bounds what fileSum reads: far more than any file a config
// names (a keys file is at most 128 MiB).
const maxWatched = 1 << 30

// fileSum hashes the file's content, through symlinks; nil when it cannot
// be read or is no regular file (a named pipe would block the watcher, and
// with it the shutdown that waits for it).
func fileSum(path string) []byte {
	b, err := config.ReadRegular(path, maxWatched)
	if err != nil {
		return nil
	}
	s := sha256.Sum256(b)
	return s[:]
}
