// Command breakwater is a sidecar reverse proxy that adds retries, circuit
// breakers, bulkheads, rate limits, quotas, timeouts, hedging, caching and
// fallbacks in front of any HTTP API, configured from one YAML file.
//
// main is thin wiring: flags, signals, listeners. The data plane is in
// proxy/, the policies in policy/, metrics, events and logs in observe/,
// the file format in config/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/breakwater-proxy/breakwater/admin"
	"github.com/breakwater-proxy/breakwater/config"
	"github.com/breakwater-proxy/breakwater/dashboard"
	"github.com/breakwater-proxy/breakwater/observe"
	"github.com/breakwater-proxy/breakwater/proxy"
	"github.com/breakwater-proxy/breakwater/reload"
	"github.com/breakwater-proxy/breakwater/store"
)

// logFlushEvery is how long a log line may wait in the buffer: short
// enough to read the log live, long enough to batch a busy second's
// access-log lines into a few writes.
const logFlushEvery = 100 * time.Millisecond

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `breakwater — a resilience sidecar for HTTP APIs

usage:
  breakwater [run] [-config FILE] [-listen ADDR] [-admin ADDR] [-upstream URL] [-log-level LEVEL]
  breakwater validate [-config FILE]
  breakwater keys new -id ID -tier TIER -file KEYS_FILE
  breakwater keys list -file KEYS_FILE
  breakwater oauth2 login [-config FILE] -upstream NAME
  breakwater version

The config file defaults to $BREAKWATER_CONFIG, else ./breakwater.yaml.
-upstream URL without a config file proxies everything to URL with safe defaults.
`

// Main runs a command and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return run(args, stderr)
	case "validate":
		return validate(args, stdout, stderr)
	case "keys":
		return keys(args, stdout, stderr)
	case "oauth2":
		return oauth2Cmd(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "breakwater %s\n", version)
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "breakwater: unknown command %q\n\n%s", cmd, usage)
	return 2
}

type flags struct {
	config, upstream string
	over             config.Overrides
}

func parseFlags(name string, args []string, stderr io.Writer, runFlags bool) (*flags, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	f := &flags{}
	fs.StringVar(&f.config, "config", "", "config file (default $BREAKWATER_CONFIG, else ./breakwater.yaml)")
	if runFlags {
		fs.StringVar(&f.over.Listen, "listen", "", "data-plane address, overrides the file's listen")
		fs.StringVar(&f.over.Admin, "admin", "", "admin address, overrides admin.listen")
		fs.StringVar(&f.upstream, "upstream", "", "quick mode: proxy everything to this URL with safe defaults")
		fs.StringVar(&f.over.LogLevel, "log-level", "", "debug, info, warn or error")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.upstream != "" && f.config != "" {
		return nil, errors.New("-upstream and -config cannot be used together: -upstream is quick mode, without a file")
	}
	if f.upstream == "" && f.config == "" {
		f.config = os.Getenv("BREAKWATER_CONFIG")
		if f.config == "" {
			f.config = "breakwater.yaml"
		}
	}
	switch t := os.Getenv("BREAKWATER_TRANSPORT"); t {
	case "", "fast", "standard":
		f.over.Transport = t
	default:
		return nil, fmt.Errorf("BREAKWATER_TRANSPORT=%q: want fast or standard", t)
	}
	return f, nil
}

func (f *flags) load() (*config.Config, []config.Problem, error) {
	if f.upstream != "" {
		return config.Quick(f.upstream, f.over)
	}
	return config.Load(f.config, f.over)
}

func validate(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags("validate", args, stderr, false)
	if err != nil {
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 2
	}
	cfg, warns, err := f.load()
	for _, w := range warns {
		fmt.Fprintln(stderr, w.Error())
	}
	if err == nil {
		err = checkKeys(cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err.Error())
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (config %s)\n%s", f.config, cfg.Hash, config.Summary(cfg))
	return 0
}

func run(args []string, stderr io.Writer) int {
	f, err := parseFlags("run", args, stderr, true)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "breakwater: %v\n", err)
		return 2
	}
	cfg, warns, err := f.load()
	if err != nil {
		fmt.Fprintln(stderr, err.Error())
		return 1
	}
	if os.Getenv("GOGC") == "" {
		// A proxy's heap is small and short-lived: collecting at 200%
		// rather than 100% cut CPU per request by ~6% in make bench, for a
		// few MiB more peak RSS. GOGC in the environment still wins.
		debug.SetGCPercent(200)
	}
	// The log, access log included, never waits for stderr: lines are
	// written in batches, and dropped (counted) only if stderr cannot keep
	// up; Close writes what is pending on every way out of run.
	logOut := observe.NewLogBuffer(stderr, 0, logFlushEvery)
	defer logOut.Close()
	log := observe.NewLogger(zerolog.MultiLevelWriter(logOut), cfg.Log.Level, cfg.Log.Format).With().Str("service", "breakwater").Logger()
	defer routeStdLog(log)()
	store.RouteLogs(func(msg string) { log.Debug().Str("component", "store").Msg(msg) })
	for _, w := range warns {
		log.Warn().Msg(w.Error())
	}
	hub := observe.NewHub()
	metrics := observe.NewMetrics(version)
	metrics.FollowLogDrops(logOut.Dropped)
	obs := observe.NewFanout(metrics, hub)
	srv := proxy.New(log, obs)
	defer func() { // what the proxy started (checks, tokens, store, spans), on every way out; Close again is harmless
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	}()
	file := f.config
	if f.upstream != "" {
		file = "" // quick mode: no file to reload
	}
	rl := reload.New(file, f.over, srv, obs, log)
	if err := rl.Start(cfg, warns); err != nil {
		log.Error().Err(err).Msg("cannot start with this config")
		return 1
	}

	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		log.Error().Err(err).Str("addr", cfg.Admin.Listen).Msg("cannot bind the admin listener")
		return 1
	}
	// The admin rules (Host, token, the dashboard's actions) follow the
	// address actually bound: a reload does not move the listener, so it
	// may not drop the token that guards it either.
	bound := adminLn.Addr()
	rl.Check = admin.ReloadCheck(bound)
	adm := admin.New(srv, metrics.Registry, hub, rl, bound)
	dash := dashboard.Handler(dashboard.Options{Actions: adm.ActionsAllowed, TokenRequired: adm.TokenRequired})
	adm.Mux().Handle("GET /", dash)
	adm.Mux().Handle("GET /ui/", dash)
	if !config.IsLoopback(bound.String()) {
		log.Warn().Str("admin", bound.String()).Msg("admin listener is reachable beyond loopback (admin.allow_remote)")
	}
	dataLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		adminLn.Close()
		log.Error().Err(err).Str("addr", cfg.Listen).Msg("cannot bind the data listener")
		return 1
	}
	inflight := &inflightHandler{next: srv}
	dataSrv := &http.Server{
		Handler:           inflight,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		// No WriteTimeout: it would cut SSE streams and long downloads;
		// route timeout and stream_idle_timeout bound work instead.
		ErrorLog: newStdLogger(log),
	}
	adminSrv := &http.Server{Handler: adm, ReadHeaderTimeout: 10 * time.Second, ErrorLog: newStdLogger(log)}
	// Signals are caught before /readyz can say 200: a SIGTERM sent as
	// soon as the process is ready must drain it, not kill it.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { _ = adminSrv.Serve(adminLn) }()
	go func() { _ = dataSrv.Serve(dataLn) }()
	adm.Ready.Store(true)
	log.Info().Str("version", version).Str("listen", dataLn.Addr().String()).Str("admin", adminLn.Addr().String()).
		Str("config", f.config).Str("config_hash", cfg.Hash).Msg("breakwater started")

	stopWatch := rl.Watch(reload.PollEvery)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if f.upstream != "" {
				log.Warn().Msg("SIGHUP ignored: quick mode has no config file")
				continue
			}
			_, _ = rl.Reload("SIGHUP")
			continue
		}
		log.Info().Str("signal", sig.String()).Msg("shutting down: draining")
		break
	}
	stopWatch()
	go func() {
		for sig := range sigs {
			if sig != syscall.SIGHUP {
				log.Warn().Str("signal", sig.String()).Msg("second signal: exiting at once")
				_ = logOut.Close()
				os.Exit(1)
			}
		}
	}()
	cur := srv.Config()
	shutdown(cur, adm, dataSrv, adminSrv, inflight, log)
	// Health checks, token renewal and store clients stop, and spans still
	// batched are sent, before exit.
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer fcancel()
	_ = srv.Close(fctx)
	return 0
}

// shutdown: /readyz turns 503, drain_delay passes (still serving), the
// listener stops accepting, in-flight requests and WebSockets get up to
// shutdown_timeout; the admin listener closes last.
func shutdown(cfg *config.Config, adm *admin.Handler, dataSrv, adminSrv *http.Server, inflight *inflightHandler, log zerolog.Logger) {
	adm.Ready.Store(false)
	if d := cfg.Server.DrainDelay.D(); d > 0 {
		time.Sleep(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	if err := dataSrv.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("shutdown timeout: closing remaining connections")
		_ = dataSrv.Close()
	}
	// Shutdown does not wait for hijacked connections (WebSockets); their
	// handlers are still running, so wait for those too.
	if !inflight.wait(ctx) {
		log.Warn().Int64("in_flight", inflight.n.Load()).Msg("shutdown timeout: upgraded connections cut")
	}
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer acancel()
	_ = adminSrv.Shutdown(actx)
	log.Info().Msg("stopped")
}

// inflightHandler counts running handlers, upgraded connections included.
type inflightHandler struct {
	next http.Handler
	wg   sync.WaitGroup
	n    atomic.Int64
}

func (h *inflightHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.wg.Add(1)
	h.n.Add(1)
	defer func() { h.n.Add(-1); h.wg.Done() }()
	h.next.ServeHTTP(w, r)
}

func (h *inflightHandler) wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
