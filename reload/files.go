package reload

import (
	"slices"
	"sync"
	"time"
)

// watchSecretFiles reloads when a file named by ${file:…} in the running
// config changes, like the config file itself: rotating a Kubernetes
// Secret needs no restart. The set of files follows the running config;
// it is checked every poll (a reload may name new files or drop some).
// The returned stop waits for the watchers to end.
func (r *Reloader) watchSecretFiles(poll time.Duration) (stop func()) {
	if poll <= 0 {
		poll = PollEvery
	}
	watching := map[string]func(){}
	sync1 := func() {
		var want []string
		if cfg := r.srv.Config(); cfg != nil {
			want = cfg.SecretFiles()
		}
		for path, stop := range watching {
			if !slices.Contains(want, path) {
				stop()
				delete(watching, path)
			}
		}
		for _, path := range want {
			if _, ok := watching[path]; !ok {
				watching[path] = WatchFile(path, poll, r.log, func() { _, _ = r.Reload("secret file changed") })
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
