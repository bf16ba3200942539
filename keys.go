package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/breakwater-proxy/breakwater/clients"
	"github.com/breakwater-proxy/breakwater/config"
)

const keysUsage = `usage:
  breakwater keys new -id ID -tier TIER -file KEYS_FILE
  breakwater keys list -file KEYS_FILE
`

// keys runs `breakwater keys new|list`.
func keys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage) }
	file := fs.String("file", "", "the keys file (clients.keys_file)")
	var id, tier *string
	if sub == "new" {
		id = fs.String("id", "", "the client's id: logged, forwarded, shown by keys list")
		tier = fs.String("tier", "", "the client's tier, one of the config's tiers")
	}
	if sub != "new" && sub != "list" {
		fmt.Fprintf(stderr, "breakwater keys: unknown command %q\n\n%s", sub, keysUsage)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *file == "" || fs.NArg() > 0 || (sub == "new" && (*id == "" || *tier == "")) {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	if sub == "new" {
		key, err := clients.Issue(*file, *id, *tier)
		if err != nil {
			fmt.Fprintf(stderr, "breakwater keys new: %v\n", err)
			return 1
		}
		// The one time the key exists outside the client: stdout only, so
		// that `> key.txt` captures it and nothing else.
		fmt.Fprintln(stdout, key)
		fmt.Fprintf(stderr, "client %q (tier %s) added to %s; the key above is shown once and stored nowhere\n", *id, *tier, *file)
		return 0
	}
	k, err := clients.Load(*file, nil)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIER\tDISABLED\tKEY SHA-256")
	for _, c := range k.List() {
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", c.ID, c.Tier, c.Disabled, c.Short())
	}
	_ = tw.Flush()
	return 0
}

// checkKeys reads the keys file a valid config names, for validate: its
// problems are the config's, with FILE:LINE.
func checkKeys(cfg *config.Config) error {
	if cfg.Clients.KeysFile == "" {
		return nil
	}
	_, err := clients.Load(cfg.Clients.KeysFile, func(t string) bool { return cfg.Tiers[t] != nil })
	return err
}
