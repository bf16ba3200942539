// Package reload swaps a new config file into a running proxy: on SIGHUP,
// on POST /reload, and when the file changes (Watch). The new file is
// parsed and validated first; a bad one keeps the running config. A good
// one is swapped in atomically by proxy.Server's Load, which carries the
// stateful policies whose settings did not change.
package reload

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/proxy"
)

// Result is the outcome of one load, as /health, /reload and the events
// stream report it.
type Result struct {
	OK bool `json:"ok"`
	// Reason is what asked: start, SIGHUP, admin, file changed.
	Reason string    `json:"reason"`
	Time   time.Time `json:"time"`
	// Hash is the running config's hash after this load: the new one on
	// success, the old one (still running) on failure.
	Hash string `json:"config_hash"`
	// Errors are every problem of a rejected file, one a line
	// (FILE:LINE: field.path: message), secrets redacted.
	Errors []string `json:"errors,omitempty"`
	// Warnings are the accepted file's doubtful settings.
	Warnings []string `json:"warnings,omitempty"`
}

// Observer is told of every load: observe.Fanout counts it and publishes
// the reload event.
type Observer interface {
	// Loaded notes the start-up load.
	Loaded()
	// Reloaded notes a later load: hash is the running config's afterwards
	// (the old one when rejected), errs the redacted problems of a
	// rejected file.
	Reloaded(ok bool, reason, hash string, errs []string)
}

// Reloader reloads one file into one proxy. Its methods are safe for
// concurrent use; reloads are serialised.
type Reloader struct {
	path string // "" in quick mode: nothing to reload
	over config.Overrides
	srv  *proxy.Server
	obs  Observer
	log  zerolog.Logger

	// Check, when set, vets a new file that config.Load accepted against
	// facts of the running process that no file can change (main checks
	// the admin token against the address actually bound). Any problem it
	// returns rejects the reload like a validation error. nil means no
	// check. Set it before the first Reload or Watch (the start-up load
	// is not checked: config validation covers a fresh bind).
	Check func(cfg *config.Config) []config.Problem

	mu   sync.Mutex // serialises loads
	last atomic.Pointer[Result]
}

// ErrNoFile is Reload's answer in quick mode (-upstream), which has no file.
var ErrNoFile = errors.New("no config file to reload (quick mode)")

// New returns a Reloader for the file at path, read with the command
// line's overrides. path "" means quick mode: Reload always fails with
// ErrNoFile.
func New(path string, over config.Overrides, srv *proxy.Server, obs Observer, log zerolog.Logger) *Reloader {
	return &Reloader{path: path, over: over, srv: srv, obs: obs, log: log}
}

// Start loads the first config. An error here is fatal to the caller: a
// file that fails at start-up stops the process (SPEC.md, Lifecycle).
func (r *Reloader) Start(cfg *config.Config, warns []config.Problem) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.srv.Load(cfg); err != nil {
		return err
	}
	r.obs.Loaded()
	r.last.Store(&Result{OK: true, Reason: "start", Time: time.Now().UTC(), Hash: cfg.Hash, Warnings: lines(cfg, warns)})
	return nil
}

// Last is the outcome of the latest load (nil before Start).
func (r *Reloader) Last() *Result { return r.last.Load() }

// Reload re-reads the file and swaps it in. On any problem the running
// config stays, every problem is logged, reloads_total{result="failure"}
// counts it, and the error (a config.Problems for a bad file) is returned
// with the Result.
func (r *Reloader) Reload(reason string) (*Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.srv.Config()
	res := &Result{Reason: reason, Time: time.Now().UTC()}
	if old != nil {
		res.Hash = old.Hash
	}
	var cfg *config.Config
	var warns []config.Problem
	err := ErrNoFile
	if r.path != "" {
		cfg, warns, err = config.Load(r.path, r.over)
	}
	if err == nil {
		res.Warnings = lines(cfg, warns)
		for _, w := range res.Warnings {
			r.log.Warn().Str("reason", reason).Msg(w)
		}
		if old != nil && (cfg.Listen != old.Listen || cfg.Admin.Listen != old.Admin.Listen) {
			r.log.Warn().Msg("listen addresses changed: they take effect at the next restart")
		}
		if old != nil && (cfg.Log.Level != old.Log.Level || cfg.Log.Format != old.Log.Format) {
			r.log.Warn().Msg("log.level and log.format changes take effect at the next restart")
		}
		if r.Check != nil {
			if ps := r.Check(cfg); len(ps) > 0 {
				err = config.Problems(ps)
			}
		}
	}
	if err == nil {
		err = r.srv.Load(cfg)
	}
	if err != nil {
		// Problems are redacted by config already; the running config's
		// secrets are removed once more, in case the new file moved one
		// somewhere that a message echoes.
		res.Errors = lines(old, problemsOf(err))
		for _, l := range res.Errors {
			r.log.Error().Str("reason", reason).Msg("reload rejected: " + l)
		}
		r.last.Store(res)
		r.obs.Reloaded(false, reason, res.Hash, res.Errors)
		return res, err
	}
	res.OK, res.Hash = true, cfg.Hash
	r.last.Store(res)
	r.obs.Reloaded(true, reason, cfg.Hash, nil)
	r.log.Info().Str("reason", reason).Str("config_hash", cfg.Hash).Msg("config reloaded")
	return res, nil
}

func problemsOf(err error) []config.Problem {
	var ps config.Problems
	if errors.As(err, &ps) {
		return ps
	}
	return []config.Problem{{Msg: err.Error()}}
}

// lines prints problems, redacted with cfg's secrets when cfg is known.
func lines(cfg *config.Config, ps []config.Problem) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Error()
		if cfg != nil {
			out[i] = cfg.Redact(out[i])
		}
	}
	return out
}
