package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// hash fingerprints the effective config.
func (c *Config) hash() string {
	b, _ := json.Marshal(c.withoutHash())
	// Secrets print redacted, so fold their values in separately, each
	// after where it is set: a new token is a new config, however short,
	// and the order is fixed so that the same file always hashes the same.
	h := sha256.New()
	h.Write(b)
	fmt.Fprintf(h, "\x00admin.token\x00%s", c.Admin.Token.Reveal())
	for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
		set := c.Upstreams[name].Headers.Set
		for _, k := range slices.Sorted(maps.Keys(set)) {
			fmt.Fprintf(h, "\x00upstreams.%s.headers.set.%s\x00%s", name, k, set[k].Reveal())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (c *Config) withoutHash() Config {
	cp := *c
	cp.Hash = ""
	return cp
}
