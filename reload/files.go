package reload

import (
	"slices"
	"sync"
	"time"
)

// watchNamedFiles reloads when a file the running config names changes,
// like the config file itself: a file named by ${file:…} (rotating a
// Kubernetes Secret needs no restart) and clients.keys_file. The set of
// files follows the running config; it is checked every poll (a reload
// may name new files or drop some). The returned stop waits for the
// watchers to end.
func (r *Reloader) watchNamedFiles(poll time.Duration) (stop func()) {
	if poll <= 0 {
		poll = PollEvery
	}
	watching := map[string]func(){}
	sync1 := func() {
		reason := map[string]string{}
		var want []string
		if cfg := r.srv.Config(); cfg != nil {
			for _, f := range cfg.SecretFiles() {
				want, reason[f] = append(want, f), "secret file changed"
			}
			if f := cfg.Clients.KeysFile; f != "" {
				want, reason[f] = append(want, f), "keys file changed"
			}
		}
		for path, stop := range watching {
			if !slices.Contains(want, path) {
				stop()
				delete(watching, path)
			}
		}
		for _, path := range want {
			if _, ok := watching[path]; !ok {
				why := reason[path]
				watching[path] = WatchFile(path, poll, r.log, func() { _, _ = r.Reload(why) })
			}
		}
	}
	sync1()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(poll)
		defer tick.Stop()
		for {
			select {
			case <-done:
				for _, stop := range watching {
					stop()
				}
				return
			case <-tick.C:
				sync1()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
