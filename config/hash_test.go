package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestHash(t *testing.T) {
	parseHash := func(text string) string {
		t.Helper()
		cfg, _, err := Parse("bw.yaml", []byte(text), env(nil), Overrides{})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(cfg.Hash) != 16 {
			t.Fatalf("Hash = %q, want 16 hex digits", cfg.Hash)
		}
		return cfg.Hash
	}
	const file = `admin: {token: "admin-secret"}
upstreams:
  api:
    url: "http://127.0.0.1:9000"
    headers:
      set: {A: "aaaa", B: "bbbb", C: "cccc", D: "dd"}
routes:
  - name: r
    upstream: api
    timeout: 5s
`
	h := parseHash(file)
	// Map order must not leak into the hash: parse it many times.
	for range 20 {
		if got := parseHash(file); got != h {
			t.Fatalf("the same file hashed to %s and %s", h, got)
		}
	}

	same := []struct{ name, text string }{
		{"comments and spacing", "# a comment\n" + strings.ReplaceAll(file, "timeout: 5s", "timeout:    5s   # five")},
		{"an equal value written differently", strings.ReplaceAll(file, "timeout: 5s", "timeout: 5000ms")},
		{"keys in another order", strings.ReplaceAll(file, `{A: "aaaa", B: "bbbb", C: "cccc", D: "dd"}`, `{D: "dd", C: "cccc", B: "bbbb", A: "aaaa"}`)},
		{"a default written out", strings.ReplaceAll(file, "timeout: 5s", "timeout: 5s\n    errors: auto")},
		// A secret is no part of the hash (an offline oracle otherwise).
		{"a header value", strings.ReplaceAll(file, `"aaaa"`, `"aaab"`)},
		{"a short header value", strings.ReplaceAll(file, `"dd"`, `"de"`)},
		{"two header values swapped", strings.ReplaceAll(file, `A: "aaaa", B: "bbbb"`, `A: "bbbb", B: "aaaa"`)},
		{"the admin token", strings.ReplaceAll(file, "admin-secret", "admin-secreu")},
	}
	for _, tt := range same {
		if got := parseHash(tt.text); got != h {
			t.Errorf("%s changed the hash", tt.name)
		}
	}

	changed := []struct{ name, text string }{
		{"a timeout", strings.ReplaceAll(file, "timeout: 5s", "timeout: 6s")},
		{"a header set", strings.ReplaceAll(file, `D: "dd"}`, `D: "dd", E: "ee"}`)},
		{"the admin token removed", strings.ReplaceAll(file, `admin: {token: "admin-secret"}`, `admin: {}`)},
		{"a route added", file + "  - {name: s, upstream: api}\n"},
		{"a cache turned on", file + "    cache: {ttl: 1m}\n"},
		{"a breaker mode", file + "    circuit_breaker: {failure_threshold: 3}\n"},
		{"the upstream url", strings.ReplaceAll(file, "9000", "9001")},
	}
	seen := map[string]string{h: "the original"}
	for _, tt := range changed {
		got := parseHash(tt.text)
		if prev, dup := seen[got]; dup {
			t.Errorf("changing %s gave the hash of %s", tt.name, prev)
		}
		seen[got] = tt.name
	}
}

func TestHashIgnoresItself(t *testing.T) {
	cfg := mustParse(t, base)
	if got := cfg.hash(); got != cfg.Hash {
		t.Errorf("hash() after Parse = %s, want the stored %s", got, cfg.Hash)
	}
}

// oracleFile has an admin token and a header secret.
const oracleFile = `admin: {token: "${ADMIN_TOKEN}"}
upstreams:
  api:
    url: "http://127.0.0.1:9000"
    headers: {set: {Authorization: "Bearer ${API_TOKEN}", X-Tenant: acme}}
routes:
  - {name: r, upstream: api, timeout: 5s}
`

// oracleWords is the word list that recovered admin.token from the hash.
var oracleWords = []string{"password", "123456", "letmein", "qwerty", "hunter2", "dragon", "monkey"}

// The published hash (/config, /health, X-Config-Hash) lets nobody test a
// guess of a secret offline: it is the same whatever the secrets are.
func TestHashIsNoOracleForSecrets(t *testing.T) {
	parseWith := func(adminTok, apiTok string) *Config {
		t.Helper()
		cfg, _, err := Parse("bw.yaml", []byte(oracleFile), env(map[string]string{"ADMIN_TOKEN": adminTok, "API_TOKEN": apiTok}), Overrides{})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		return cfg
	}
	real := parseWith("hunter2", "tok-9f8e7d6c")
	for _, w := range oracleWords {
		if got := parseWith(w, "tok-9f8e7d6c").Hash; got != real.Hash {
			t.Errorf("admin.token %q hashes to %s, hunter2 to %s: a guess can be told apart", w, got, real.Hash)
		}
		if got := parseWith("hunter2", w).Hash; got != real.Hash {
			t.Errorf("a header secret %q hashes to %s, the real one to %s", w, got, real.Hash)
		}
	}

	// The attack that worked: /config's body (which was the hash's input
	// but for the secrets) hashed with a guess folded in, or with the
	// guess put where /config shows [REDACTED].
	body := compact(t, strings.Replace(string(real.JSON()), `"hash": "`+real.Hash+`"`, `"hash": ""`, 1))
	for _, w := range oracleWords {
		h := sha256.New()
		h.Write([]byte(body))
		fmt.Fprintf(h, "\x00admin.token\x00%s", w)
		for _, name := range slices.Sorted(maps.Keys(real.Upstreams)) {
			set := real.Upstreams[name].Headers.Set
			for _, k := range slices.Sorted(maps.Keys(set)) {
				fmt.Fprintf(h, "\x00upstreams.%s.headers.set.%s\x00%s", name, k, set[k].Reveal())
			}
		}
		if got := hex.EncodeToString(h.Sum(nil))[:16]; got == real.Hash {
			t.Errorf("the guess %q reproduces the published hash", w)
		}
		filled := strings.Replace(strings.Replace(string(real.JSON()), `"hash": "`+real.Hash+`"`, `"hash": ""`, 1), `"token": "[REDACTED]"`, fmt.Sprintf(`"token": %q`, w), 1)
		for _, form := range []string{filled, compact(t, filled)} {
			sum := sha256.Sum256([]byte(form))
			if hex.EncodeToString(sum[:])[:16] == real.Hash {
				t.Errorf("the guess %q put into /config's body reproduces the published hash", w)
			}
		}
	}

	// A non-secret setting still changes it, and so does where a secret
	// comes from.
	for _, changed := range []string{
		strings.Replace(oracleFile, "timeout: 5s", "timeout: 6s", 1),
		strings.Replace(oracleFile, "X-Tenant: acme", "X-Tenant: acme, X-Other: b", 1),
	} {
		cfg, _, err := Parse("bw.yaml", []byte(changed), env(map[string]string{"ADMIN_TOKEN": "hunter2", "API_TOKEN": "tok-9f8e7d6c"}), Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Hash == real.Hash {
			t.Errorf("a change to a non-secret setting kept the hash %s", cfg.Hash)
		}
	}
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
