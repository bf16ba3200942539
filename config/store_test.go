package config

import (
	"errors"
	"strings"
	"testing"
)

// shared: true without a store is an error at the line of that key, naming
// store; a store block is defaulted and checked.
func TestStoreValidation(t *testing.T) {
	yaml := `version: 1
upstreams:
  api:
    url: http://127.0.0.1:1
    quota:
      rate: 10/1s
      shared: true
routes:
  - name: r
    match: { path_prefix: / }
    upstream: api
    rate_limit:
      rate: 1/1s
      shared: true
    cache:
      shared: true
`
	_, _, err := Parse("bw.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, Overrides{})
	problems, ok := errors.AsType[Problems](err)
	if !ok {
		t.Fatalf("shared without a store: %v, want Problems", err)
	}
	want := map[string]int{"upstreams.api.quota.shared": 7, "routes[0].rate_limit.shared": 14, "routes[0].cache.shared": 16}
	for _, p := range problems {
		if line, ok := want[p.Path]; ok {
			if p.Line != line || !strings.Contains(p.Msg, "store") {
				t.Errorf("%s: line %d %q, want line %d naming store", p.Path, p.Line, p.Msg, line)
			}
			delete(want, p.Path)
		}
	}
	if len(want) > 0 {
		t.Errorf("not reported: %v (got %v)", want, problems)
	}

	good := `version: 1
store:
  redis:
    url: rediss://redis:6380/0
    password: ${PW}
  replicas: 3
upstreams:
  api: { url: http://127.0.0.1:1, quota: { rate: 10/1s, shared: true } }
routes:
  - { name: r, match: { path_prefix: / }, upstream: api }
`
	c, _, err := Parse("bw.yaml", []byte(good), func(k string) (string, bool) { return "s3cr3t-pw", k == "PW" }, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Store
	if s.Redis.Mode != "single" || s.Redis.Timeout.D().String() != "50ms" || s.Redis.KeyPrefix != "breakwater:" || s.OnError != "local" || s.Replicas != 3 {
		t.Fatalf("defaults: %+v", s)
	}
	if s.Redis.Password.Reveal() != "s3cr3t-pw" || strings.Contains(c.Redact("x s3cr3t-pw"), "s3cr3t") {
		t.Fatal("the store password is not a secret")
	}

	bad := strings.Replace(good, "rediss://redis:6380/0", "redis://:pw@redis:6379", 1)
	bad = strings.Replace(bad, "replicas: 3", "replicas: 0\n  on_error: maybe", 1)
	_, _, err = Parse("bw.yaml", []byte(bad), func(string) (string, bool) { return "x", true }, Overrides{})
	problems, _ = errors.AsType[Problems](err)
	var paths []string
	for _, p := range problems {
		paths = append(paths, p.Path)
	}
	for _, p := range []string{"store.redis.url", "store.replicas", "store.on_error"} {
		if !strings.Contains(strings.Join(paths, " "), p) {
			t.Errorf("%s not reported (got %v)", p, problems)
		}
	}
}

// In cluster mode a hash tag in key_prefix decides every key's slot: an
// empty one breaks breakwater's multi-key scripts (an error), any other
// puts every key on one node (a warning). Other modes do not care.
func TestStoreClusterKeyPrefix(t *testing.T) {
	for _, tc := range []struct {
		mode, prefix string
		want         string // "error", "warning" or ""
	}{
		{"cluster", "breakwater:", ""},
		{"cluster", "{}bw:", "error"},
		{"cluster", "bw:{}:", "error"},
		{"cluster", "{bw}:", "warning"},
		{"cluster", "bw{", ""}, // the tag closes in breakwater's part
		{"single", "{}bw:", ""},
		{"single", "{bw}:", ""},
	} {
		yaml := `version: 1
store:
  redis:
    mode: ` + tc.mode + `
    url: redis://redis:6379/0
    addrs: [redis:6379]
    key_prefix: "` + tc.prefix + `"
  replicas: 2
upstreams:
  api: { url: http://127.0.0.1:1, quota: { rate: 10/1s, shared: true } }
routes:
  - { name: r, match: { path_prefix: / }, upstream: api }
`
		_, warns, err := Parse("bw.yaml", []byte(yaml), func(string) (string, bool) { return "", false }, Overrides{})
		var got []string
		if problems, ok := errors.AsType[Problems](err); ok {
			for _, p := range problems {
				if p.Path == "store.redis.key_prefix" {
					got = append(got, "error")
					if p.Line != 7 || !strings.Contains(p.Msg, "CROSSSLOT") {
						t.Errorf("%s %q: %d %q, want line 7 naming CROSSSLOT", tc.mode, tc.prefix, p.Line, p.Msg)
					}
				}
			}
		} else if err != nil {
			t.Fatalf("%s %q: %v", tc.mode, tc.prefix, err)
		}
		for _, w := range warns {
			if strings.Contains(w.Error(), "store.redis.key_prefix") {
				got = append(got, "warning")
				if !strings.Contains(w.Error(), "one slot") {
					t.Errorf("%s %q: warning %q, want it to say one slot", tc.mode, tc.prefix, w)
				}
			}
		}
		if want := tc.want; (want == "" && len(got) > 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
			t.Errorf("%s key_prefix %q: got %v, want %q", tc.mode, tc.prefix, got, want)
		}
	}
}
