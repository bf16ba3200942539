package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/breakwater-proxy/breakwater/auth"
)

// oauth2Cmd is `breakwater oauth2 login -config FILE -upstream NAME`: the
// one-time authorization-code login that bootstraps a refresh_token grant.
func oauth2Cmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "login" {
		fmt.Fprintf(stderr, "breakwater: usage: breakwater oauth2 login -config FILE -upstream NAME\n")
		return 2
	}
	fs := flag.NewFlagSet("oauth2 login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv("BREAKWATER_CONFIG"), "config file")
	name := fs.String("upstream", "", "the upstream whose auth.oauth2 to log in with")
	wait := fs.Duration("timeout", 5*time.Minute, "how long to wait for the browser's redirect")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *file == "" {
		*file = "breakwater.yaml"
	}
	f := &flags{config: *file}
	cfg, _, err := f.load()
	if err != nil {
		fmt.Fprintln(stderr, err.Error())
		return 1
	}
	u := cfg.Upstreams[*name]
	if u == nil || u.Auth == nil || u.Auth.OAuth2 == nil {
		fmt.Fprintf(stderr, "breakwater: upstream %q has no auth.oauth2 in %s\n", *name, *file)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *wait)
	defer cancelT()
	if err := auth.Login(ctx, *name, u.Auth.OAuth2, stdout); err != nil {
		fmt.Fprintf(stderr, "breakwater: %s\n", cfg.Redact(err.Error()))
		return 1
	}
	return 0
}
