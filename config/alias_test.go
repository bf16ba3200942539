package config

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAnchorsAliasesAndMergeKeys(t *testing.T) {
	cfg := mustParse(t, `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    headers:
      set: &auth {Authorization: "Bearer x", X-Tenant: acme}
  other:
    url: "http://127.0.0.1:9001"
    headers:
      set:
        <<: *auth
        X-Tenant: other
routes:
  - &base
    name: one
    upstream: api
    timeout: 3s
    retry: &retry {attempts: 2, on: [502]}
    match: {methods: &reads [GET, HEAD]}
  - <<: *base
    name: two
    upstream: other
  - name: three
    upstream: api
    retry: *retry
    match: {methods: *reads}
  - <<: [{timeout: 7s, errors: problem}, {timeout: 9s, stream_idle_timeout: 1m}]
    name: four
    upstream: api
`)
	two := route(t, cfg, "two")
	if two.Timeout.D() != 3*time.Second || two.Retry.Attempts != 2 {
		t.Errorf("merged route: timeout %v, attempts %d; want 3s and 2 from the anchor", two.Timeout, two.Retry.Attempts)
	}
	if r := cfg.Routes[1]; r.Name != "two" || r.Upstream != "other" || !slices.Equal(r.Match.Methods, []string{"GET", "HEAD"}) {
		t.Errorf("merged route = %s to %s matching %v; want its own name and upstream, and the anchor's methods", r.Name, r.Upstream, r.Match.Methods)
	}
	if r := cfg.Routes[0]; r.Name != "one" || r.Upstream != "api" {
		t.Errorf("the anchored route changed: %s to %s", r.Name, r.Upstream)
	}
	three := route(t, cfg, "three")
	if three.Retry.Attempts != 2 || !slices.Equal(three.Retry.On, []string{"502"}) || !slices.Equal(cfg.Routes[2].Match.Methods, []string{"GET", "HEAD"}) {
		t.Errorf("aliased blocks: retry %+v, methods %v", three.Retry, cfg.Routes[2].Match.Methods)
	}
	// In a list of merged mappings the earlier one wins.
	four := route(t, cfg, "four")
	if four.Timeout.D() != 7*time.Second || four.Errors != "problem" || four.StreamIdleTimeout.D() != time.Minute {
		t.Errorf("route four: timeout %v, errors %q, stream_idle_timeout %v; want 7s, problem, 1m", four.Timeout, four.Errors, four.StreamIdleTimeout)
	}
	set := cfg.Upstreams["other"].Headers.Set
	if set["Authorization"].Reveal() != "Bearer x" || set["X-Tenant"].Reveal() != "other" || len(set) != 2 {
		t.Errorf("merged headers.set = %d values, Authorization %q, X-Tenant %q", len(set), set["Authorization"].Reveal(), set["X-Tenant"].Reveal())
	}
	if got := cfg.Upstreams["api"].Headers.Set["X-Tenant"].Reveal(); got != "acme" {
		t.Errorf("the anchored map changed: X-Tenant %q", got)
	}
}

func TestMergeKeyProblems(t *testing.T) {
	_, _, err := parse(t, base+`  - <<: *nope
`)
	checkProblems(t, problemsOf(t, err), []want{{0, "", "invalid YAML: unknown anchor 'nope' referenced"}})

	_, _, err = parse(t, base+`  - <<: [1, 2]
    name: s
    upstream: api
`)
	ps := problemsOf(t, err)
	if len(ps) != 2 || ps[0].Path != "routes[1]" || !strings.Contains(ps[0].Msg, "want a mapping, got a single value") {
		t.Errorf("merging scalars = %v, want 'want a mapping' on routes[1], twice", ps)
	}
}

// bombs are YAML files that expand exponentially through aliases.
var bombs = map[string]string{
	// Classic billion laughs, aimed at a list of routes through merge
	// keys: 10^9 routes' worth of keys.
	"nested merges": func() string {
		var b strings.Builder
		b.WriteString("upstreams:\n  api: {url: \"http://127.0.0.1:9000\"}\nroutes:\n  - &a0 {name: r, upstream: api, timeout: 1s}\n")
		for i := 1; i <= 9; i++ {
			fmt.Fprintf(&b, "  - &a%d {<<: [%s]}\n", i, strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 9)+fmt.Sprintf("*a%d", i-1))
		}
		return b.String()
	}(),
	// The same through merge keys in a map (headers.set).
	"map merges": func() string {
		var b strings.Builder
		b.WriteString("routes:\n  - {name: r, upstream: u0}\nupstreams:\n  u0: {url: \"http://127.0.0.1:9000\", headers: {set: &h0 {A: a, B: b, C: c}}}\n")
		for i := 1; i <= 9; i++ {
			fmt.Fprintf(&b, "  u%d: {url: \"http://127.0.0.1:9000\", headers: {set: &h%d {<<: [%s]}}}\n", i, i, strings.Repeat(fmt.Sprintf("*h%d, ", i-1), 9)+fmt.Sprintf("*h%d", i-1))
		}
		return b.String()
	}(),
	// The same, the aliases in the routes list itself.
	"aliased routes": "upstreams: {api: {url: \"http://127.0.0.1:9000\"}}\n" +
		"routes: &all [ &r {name: r, upstream: api, match: {methods: [" + strings.Repeat("GET, ", 999) + "GET]}}, " +
		strings.Repeat("*r, ", 999) + "*r]\n",
	// Textbook lol9 under keys the schema rejects, then used where a
	// mapping is wanted: refused without expanding.
	"lol": func() string {
		var b strings.Builder
		b.WriteString("upstreams: {api: {url: \"http://127.0.0.1:9000\"}}\nroutes:\n  - name: r\n    upstream: api\n    match:\n      headers: &l0 {a: lol}\n")
		for i := 1; i <= 9; i++ {
			fmt.Fprintf(&b, "      x%d: &l%d [%s]\n", i, i, strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 9)+fmt.Sprintf("*l%d", i-1))
		}
		b.WriteString("    retry: {on: *l9}\n")
		return b.String()
	}(),
}

func TestAliasBombIsRejectedQuickly(t *testing.T) {
	for name, text := range bombs {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			cfg, _, err := parse(t, text)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			if cfg != nil || err == nil {
				t.Fatal("an alias bomb was accepted")
			}
			// Generous bounds (the race detector is slow): it takes a few
			// milliseconds and megabytes; expanding it would take hours
			// and terabytes.
			if elapsed > 5*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 512<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			ps := problemsOf(t, err)
			if name == "lol" {
				// Refused where the schema stops it, before any expansion.
				if len(ps) > 20 {
					t.Errorf("%d problems: the clear ones are lost among them", len(ps))
				}
				return
			}
			if len(ps) != 1 || !strings.Contains(ps[0].Msg, "document expands to more than 100000 nodes through its aliases (an alias bomb?)") || ps[0].Line == 0 {
				t.Errorf("problems = %v, want the one alias bomb problem with a line", ps)
			}
		})
	}
}

func TestMergeKeyThatIncludesItself(t *testing.T) {
	tests := map[string]string{
		"route":       "upstreams: {api: {url: \"http://127.0.0.1:9000\"}}\nroutes: [&a {name: a, upstream: api, <<: *a}]\n",
		"headers.set": "upstreams: {api: {url: \"http://127.0.0.1:9000\", headers: {set: &s {A: b, <<: *s}}}}\nroutes: [{name: a, upstream: api}]\n",
		"in a list":   "upstreams: {api: {url: \"http://127.0.0.1:9000\"}}\nroutes:\n  - &a\n    name: a\n    upstream: api\n    <<: [{timeout: 1s}, *a]\n",
	}
	for name, text := range tests {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, _, err := parse(t, text)
			// Generous, as for the bombs: a loop would never end.
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			ps := problemsOf(t, err)
			if len(ps) != 1 || !strings.Contains(ps[0].Msg, "nested more than 100 levels deep (a merge key that includes its own mapping?)") {
				t.Errorf("problems = %v, want the one 'nested too deep' problem", ps)
			}
		})
	}
}

func TestLongMergeChainsStillWork(t *testing.T) {
	var b strings.Builder
	b.WriteString("upstreams: {api: {url: \"http://127.0.0.1:9000\"}}\nroutes:\n  - &r0 {name: r0, upstream: api, timeout: 4s}\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "  - &r%d {<<: *r%d, name: r%d}\n", i, i-1, i)
	}
	cfg := mustParse(t, b.String())
	if e := route(t, cfg, "r30"); e.Timeout.D() != 4*time.Second {
		t.Errorf("r30 timeout = %v, want 4s through 30 merges", e.Timeout)
	}
}
