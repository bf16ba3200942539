package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env is a fake environment for ${VAR} expansion.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// parse parses text as the file "bw.yaml" with no environment.
func parse(t *testing.T, text string) (*Config, []Problem, error) {
	t.Helper()
	return Parse("bw.yaml", []byte(text), env(nil), Overrides{})
}

// mustParse parses text and fails the test on any error.
func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, _, err := parse(t, text)
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return cfg
}

// problemsOf asserts that err is a Problems and returns it.
func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	if err == nil {
		t.Fatal("Parse: want an error, got none")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is a %T, want Problems: %v", err, err)
	}
	return ps
}

// want is one expected problem: its line, its field path and a piece of
// its message.
type want struct {
	line int
	path string
	msg  string
}

// checkProblems asserts that got holds exactly the wanted problems, in order.
func checkProblems(t *testing.T, got []Problem, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(wants), Problems(got))
	}
	for i, w := range wants {
		p := got[i]
		if p.File != "bw.yaml" || p.Line != w.line || p.Path != w.path || !strings.Contains(p.Msg, w.msg) {
			t.Errorf("problem %d = {File:%q Line:%d Path:%q Msg:%q}, want {bw.yaml %d %q message containing %q}",
				i, p.File, p.Line, p.Path, p.Msg, w.line, w.path, w.msg)
		}
	}
}

// A valid upstream and route, for cases that need them but test something
// else. Its first line is line 1.
const base = `upstreams:
  api: {url: "http://127.0.0.1:9000"}
routes:
  - name: r
    upstream: api
`

func TestParseReportsEachProblem(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		wants []want
	}{
		{
			name: "unknown key suggests the closest",
			yaml: base + `    retyr: {attempts: 2}
`,
			wants: []want{{6, "routes[0].retyr", `unknown key (did you mean "retry"?)`}},
		},
		{
			name:  "unknown key far from any lists the known keys",
			yaml:  "zzzzzzzz: 1\n" + base,
			wants: []want{{1, "zzzzzzzz", "unknown key (known keys: version, listen, admin, server, log, store, upstreams, defaults, routes, clients, tiers, mcp, tracing)"}},
		},
		{
			name: "unknown key in a nested block",
			yaml: base + `    circuit_breaker: {failure_treshold: 5}
`,
			wants: []want{{6, "routes[0].circuit_breaker.failure_treshold", `did you mean "failure_threshold"?`}},
		},
		{
			name: "duplicate key in a struct",
			yaml: base + `    timeout: 1s
    timeout: 2s
`,
			wants: []want{{7, "routes[0].timeout", "duplicate key"}},
		},
		{
			name: "duplicate key in a map",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000"}
  api: {url: "http://127.0.0.1:9001"}
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{3, "upstreams.api", "duplicate key"}},
		},
		{
			name: "list where a mapping is wanted",
			yaml: base + `    retry: [3]
`,
			wants: []want{{6, "routes[0].retry", "want a mapping, got a list"}},
		},
		{
			name: "single value where a list is wanted",
			yaml: base + `    match: {methods: GET}
`,
			wants: []want{{6, "routes[0].match.methods", "want a list, got a single value"}},
		},
		{
			name: "mapping where a single value is wanted",
			yaml: base + `    timeout: {seconds: 3}
`,
			wants: []want{{6, "routes[0].timeout", "want a single value, got a mapping"}},
		},
		{
			name: "list where the upstreams mapping is wanted",
			yaml: `upstreams: [api]
routes:
  - {name: r, upstream: api}
`,
			wants: []want{
				{1, "upstreams", "want a mapping, got a list"},
				{3, "routes[0].upstream", `no upstream named "api"`}, // and the route can tell
			},
		},
		{
			name: "bad duration",
			yaml: base + `    timeout: 10
`,
			wants: []want{{6, "routes[0].timeout", `want a duration such as 250ms or 30s, got "10"`}},
		},
		{
			name: "negative duration",
			yaml: base + `    timeout: -1s
`,
			wants: []want{{6, "routes[0].timeout", "must not be negative"}},
		},
		{
			name: "bad size",
			yaml: `server:
  max_body: 10 megabytes
` + base,
			wants: []want{{2, "server.max_body", `want a size such as 512KiB or 10MiB, got "10 megabytes"`}},
		},
		{
			name: "bad rate",
			yaml: base + `    rate_limit: {rate: 10 per second}
`,
			wants: []want{{6, "routes[0].rate_limit.rate", `want a rate such as 100/1m or 10/1s, got "10 per second"`}},
		},
		{
			name: "bad percent",
			yaml: base + `    circuit_breaker: {failure_rate: 150%}
`,
			wants: []want{{6, "routes[0].circuit_breaker.failure_rate", "must be above 0% and at most 100%"}},
		},
		{
			name: "bad whole number",
			yaml: base + `    retry: {attempts: three}
`,
			wants: []want{{6, "routes[0].retry.attempts", `want a whole number, got "three"`}},
		},
		{
			name: "NaN is not a number",
			yaml: base + `    retry: {backoff: {jitter: NaN}}
`,
			wants: []want{{6, "routes[0].retry.backoff.jitter", `want a number, got "NaN"`}},
		},
		{
			name: "bad log level",
			yaml: `log:
  level: verbose
` + base,
			wants: []want{{2, "log.level", `want debug, info, warn or error, got "verbose"`}},
		},
		{
			name: "bad log format",
			yaml: `log: {format: xml}
` + base,
			wants: []want{{1, "log.format", `want json or console, got "xml"`}},
		},
		{
			name: "bad errors",
			yaml: base + `    errors: html
`,
			wants: []want{{6, "routes[0].errors", `want auto, problem or jsonrpc, got "html"`}},
		},
		{
			name: "bad rate_limit key",
			yaml: base + `    rate_limit:
      rate: 10/1s
      key: cookie
`,
			wants: []want{{8, "routes[0].rate_limit.key", `want none, client_ip, client or header:NAME, got "cookie"`}},
		},
		{
			name: "bad host_header",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    host_header: origin
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{4, "upstreams.api.host_header", `want upstream or client, got "origin"`}},
		},
		{
			name: "route without upstream",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000"}
routes:
  - name: r
    timeout: 1s
`,
			wants: []want{{4, "routes[0].upstream", "every route needs an upstream"}},
		},
		{
			name: "route to an unknown upstream",
			yaml: `upstreams:
  api: {url: "http://127.0.0.1:9000"}
routes:
  - name: r
    upstream: apj
`,
			wants: []want{{5, "routes[0].upstream", `no upstream named "apj"`}},
		},
		{
			name: "upstream without url",
			yaml: `upstreams:
  api: {host_header: client}
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{2, "upstreams.api.url", "an upstream needs a url"}},
		},
		{
			name: "duplicate route name",
			yaml: base + `  - name: other
    upstream: api
  - name: r
    upstream: api
`,
			wants: []want{{8, "routes[2].name", `route name "r" is already used by routes[0]`}},
		},
		{
			name: "route without a name",
			yaml: base + `  - upstream: api
    timeout: 1s
`,
			wants: []want{{6, "routes[1].name", "every route needs a name"}},
		},
		{
			name: "path not starting with /",
			yaml: base + `    match:
      path: api/users
`,
			wants: []want{{7, "routes[0].match.path", "must start with /"}},
		},
		{
			name: "path_prefix not starting with /",
			yaml: base + `    match: {path_prefix: api/}
`,
			wants: []want{{6, "routes[0].match.path_prefix", "must start with /"}},
		},
		{
			name: "both path and path_prefix",
			yaml: base + `    match:
      path: /a
      path_prefix: /b/
`,
			wants: []want{{6, "routes[0].match", "set path or path_prefix, not both"}},
		},
		{
			name: "bad CIDR in trusted_proxies",
			yaml: `server:
  trusted_proxies:
    - 10.0.0.0/8
    - 10.0.0.0/33
` + base,
			wants: []want{{4, "server.trusted_proxies[1]", `want a CIDR such as 10.0.0.0/8, got "10.0.0.0/33"`}},
		},
		{
			name: "admin on every interface without allow_remote",
			yaml: `admin:
  listen: ":9901"
` + base,
			wants: []want{{2, "admin.listen", ":9901 is not loopback: set admin.allow_remote: true"}},
		},
		{
			name: "admin on a public address without allow_remote",
			yaml: `admin: {listen: "10.1.2.3:9901"}
` + base,
			wants: []want{{1, "admin.listen", "10.1.2.3:9901 is not loopback"}},
		},
		{
			name: "allow_remote without a token",
			yaml: `admin:
  listen: "0.0.0.0:9901"
  allow_remote: true
` + base,
			wants: []want{{1, "admin.token", "a token is required when admin.allow_remote is true"}},
		},
		{
			name: "allow_remote without a token on loopback",
			yaml: `admin:
  allow_remote: true
` + base,
			wants: []want{{1, "admin.token", "a token is required when admin.allow_remote is true"}},
		},
		{
			name: "admin sharing the data port",
			yaml: `listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:8080}
` + base,
			wants: []want{{2, "admin.listen", "must not share the data port"}},
		},
		{
			name: "both breaker modes in one block",
			yaml: base + `    circuit_breaker:
      failure_threshold: 5
      failure_rate: 50%
`,
			wants: []want{{6, "routes[0].circuit_breaker", "set failure_threshold (count-based) or failure_rate/min_requests/window (time-based), not both"}},
		},
		{
			name: "both breaker modes in defaults",
			yaml: `defaults:
  circuit_breaker: {failure_threshold: 5, window: 10s}
` + base,
			wants: []want{{2, "defaults.circuit_breaker", "not both"}},
		},
		{
			name: "bad retry.on value",
			yaml: base + `    retry:
      on: [connect_error, 503, slow]
`,
			wants: []want{{7, "routes[0].retry.on[2]", `want connect_error, timeout, 5xx, 4xx or a status from 400 to 599, got "slow"`}},
		},
		{
			name: "retry.on status out of range",
			yaml: base + `    retry: {on: [200]}
`,
			wants: []want{{6, "routes[0].retry.on[0]", `got "200"`}},
		},
		{
			name: "bad circuit_breaker.on value",
			yaml: `defaults:
  circuit_breaker: {on: [5XX]}
` + base,
			wants: []want{{2, "defaults.circuit_breaker.on[0]", `got "5XX"`}},
		},
		{
			name: "attempts out of range",
			yaml: base + `    retry: {attempts: 1000000000000000000}
`,
			wants: []want{{6, "routes[0].retry.attempts", "want 1 to 10 (1 = no retry), got 1000000000000000000"}},
		},
		{
			name: "rate limit with no rate anywhere",
			yaml: base + `    rate_limit: {burst: 5}
`,
			wants: []want{{6, "routes[0].rate_limit.rate", "a rate limit needs a rate such as 10/1s"}},
		},
		{
			name: "bulkhead with max_concurrent 0",
			yaml: base + `    bulkhead: {max_concurrent: 0}
`,
			wants: []want{{6, "routes[0].bulkhead.max_concurrent", "must be at least 1"}},
		},
		{
			name: "quota without a rate",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    quota: {burst: 3}
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{4, "upstreams.api.quota.rate", "a quota needs a rate"}},
		},
		{
			name:  "no routes",
			yaml:  "upstreams:\n  api: {url: \"http://127.0.0.1:9000\"}\n",
			wants: []want{{0, "routes", "at least one route is needed"}},
		},
		{
			name:  "empty file",
			yaml:  "# nothing but a comment\n",
			wants: []want{{0, "", "file is empty"}},
		},
		{
			// yaml.v3 numbers some parser errors one line early
			// (go-yaml/yaml#205); scanner errors like this one are right.
			name:  "invalid YAML",
			yaml:  base + "    timeout: @1s\n",
			wants: []want{{6, "", "invalid YAML: found character that cannot start any token"}},
		},
		{
			name: "a document that is not a mapping",
			yaml: "- just\n- a list\n",
			wants: []want{
				{0, "routes", "at least one route is needed"},
				{1, "", "want a mapping, got a list"},
			},
		},
		{
			name:  "unsupported version",
			yaml:  "version: 2\n" + base,
			wants: []want{{1, "version", "unsupported version 2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parse(t, tt.yaml)
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			checkProblems(t, problemsOf(t, err), tt.wants)
		})
	}
}

func TestParseReportsEveryMistakeInOneRun(t *testing.T) {
	const text = `log:
  level: loud
upstreams:
  api: {url: "http://127.0.0.1:9000"}
routes:
  - name: r
    upstream: api
    timeout: soon
    retry:
      atempts: 2
`
	_, _, err := parse(t, text)
	ps := problemsOf(t, err)
	const wantText = `bw.yaml:2: log.level: want debug, info, warn or error, got "loud"
bw.yaml:8: routes[0].timeout: want a duration such as 250ms or 30s, got "soon"
bw.yaml:10: routes[0].retry.atempts: unknown key (did you mean "attempts"?)`
	if got := ps.Error(); got != wantText {
		t.Errorf("Problems.Error() =\n%s\nwant\n%s", got, wantText)
	}
	if err.Error() != wantText {
		t.Errorf("the returned error prints differently from its Problems:\n%s", err)
	}
}

func TestProblemFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "bw.yaml", Line: 3, Path: "routes[2].retry.attempts", Msg: "bad"}, "bw.yaml:3: routes[2].retry.attempts: bad"},
		{Problem{File: "bw.yaml", Line: 3, Path: "routes[0].retry", Msg: "slow", Warning: true}, "bw.yaml:3: routes[0].retry: warning: slow"},
		{Problem{File: "bw.yaml", Path: "routes", Msg: "none"}, "bw.yaml: routes: none"},
		{Problem{File: "bw.yaml", Msg: "file is empty"}, "bw.yaml: file is empty"},
		{Problem{Path: "listen", Msg: "bad"}, "listen: bad"},
	}
	for _, tt := range tests {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestParseWarnings(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		wants []string // Problem.Error() of each warning
	}{
		{
			name: "attempts × per_try_timeout plus backoff over the timeout",
			yaml: base + `    timeout: 1s
    retry:
      attempts: 3
      per_try_timeout: 500ms
`,
			// 3 × 500ms + 100ms + 200ms of backoff = 1.8s.
			wants: []string{"bw.yaml:7: routes[0].retry: warning: attempts × per_try_timeout plus backoff (1.8s) exceeds the route timeout (1s): the last attempts cannot all run"},
		},
		{
			name: "the same numbers inherited from defaults warn on the route",
			yaml: `defaults:
  timeout: 1s
  retry: {attempts: 3, per_try_timeout: 500ms}
` + base,
			// The route sets no retry, so its own line is given.
			wants: []string{"bw.yaml:7: routes[0].retry: warning: attempts × per_try_timeout plus backoff (1.8s) exceeds the route timeout (1s): the last attempts cannot all run"},
		},
		{
			name: "breaker window under twice per_try_timeout",
			yaml: base + `    timeout: 60s
    retry: {per_try_timeout: 10s}
    circuit_breaker:
      window: 15s
`,
			wants: []string{"bw.yaml:9: routes[0].circuit_breaker.window: warning: window 15s is shorter than twice per_try_timeout (10s): it can hardly collect failures"},
		},
		{
			name: "matching the Mcp-Name header trusts the client",
			yaml: base + `    match: { headers: { Mcp-Name: search } }
`,
			wants: []string{"bw.yaml:6: routes[0].match.headers.Mcp-Name: warning: a client sends any Mcp-Name it likes, whatever its body calls: match the call with jsonrpc_method or tool, which are read from the body"},
		},
		{
			name: "numbers that fit warn about nothing",
			yaml: base + `    timeout: 10s
    retry: {attempts: 3, per_try_timeout: 2s}
    circuit_breaker: {window: 30s}
`,
		},
		{
			name: "a count-based breaker has no window to warn about",
			yaml: base + `    timeout: 60s
    retry: {per_try_timeout: 10s}
    circuit_breaker: {failure_threshold: 5}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns, err := parse(t, tt.yaml)
			if err != nil {
				t.Fatalf("warnings must not fail Parse: %v", err)
			}
			if cfg == nil {
				t.Fatal("Parse returned no config")
			}
			if len(warns) != len(tt.wants) {
				t.Fatalf("got %d warnings, want %d:\n%v", len(warns), len(tt.wants), Problems(warns))
			}
			for i, w := range warns {
				if !w.Warning {
					t.Errorf("warning %d has Warning unset: %v", i, w)
				}
				if got := w.Error(); got != tt.wants[i] {
					t.Errorf("warning %d =\n%s\nwant\n%s", i, got, tt.wants[i])
				}
			}
		})
	}
}

func TestWarningsComeWithErrors(t *testing.T) {
	_, warns, err := parse(t, base+`    timeout: 1s
    retry: {attempts: 3, per_try_timeout: 500ms}
    errors: html
`)
	checkProblems(t, problemsOf(t, err), []want{{8, "routes[0].errors", "want auto, problem or jsonrpc"}})
	if len(warns) != 1 || warns[0].Path != "routes[0].retry" || !warns[0].Warning {
		t.Errorf("warnings = %v, want the one on routes[0].retry", Problems(warns))
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"HOST": "api.example.com", "EMPTY": "", "PRICE": "5"}
	tests := []struct {
		name, value, want string
	}{
		{"set", "${HOST}", "api.example.com"},
		{"inside text", "https://${HOST}/v1", "https://api.example.com/v1"},
		{"default unused", "${HOST:-localhost}", "api.example.com"},
		{"default used", "${PORT:-8080}", "8080"},
		{"empty default", "a${PORT:-}b", "ab"},
		{"set but empty takes the default", "${EMPTY:-fallback}", "fallback"},
		{"set but empty without default", "a${EMPTY}b", "ab"},
		{"dollar dollar", "cost: $$${PRICE}", "cost: $5"},
		{"escaped reference", "$${HOST}", "${HOST}"},
		{"bare dollar", "$HOST and $", "$HOST and $"},
		{"two in a row", "${PRICE}${PRICE}", "55"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := base + "    fallback: {body: '" + tt.value + "'}\n"
			cfg, _, err := Parse("bw.yaml", []byte(text), env(vars), Overrides{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := cfg.Routes[0].Effective.Fallback.Body; got != tt.want {
				t.Errorf("%s expanded to %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestExpandMissingVariable(t *testing.T) {
	const text = `upstreams:
  api:
    url: "http://${API_HOST}"
    headers:
      set: {Authorization: "Bearer ${API_TOKEN}"}
routes:
  - name: r
    upstream: api
    fallback: {body: "${API_HOST}"}
`
	_, _, err := Parse("bw.yaml", []byte(text), env(map[string]string{"API_TOKEN": "t0k3n-value"}), Overrides{})
	ps := problemsOf(t, err)
	var missing []Problem
	for _, p := range ps {
		if strings.Contains(p.Msg, "is not set") {
			missing = append(missing, p)
		}
	}
	checkProblems(t, missing, []want{
		{3, "upstreams.api.url", "environment variable API_HOST is not set (write ${API_HOST:-default} to give a default)"},
		{9, "routes[0].fallback.body", "environment variable API_HOST is not set"},
	})
	if !strings.Contains(ps.Error(), "bw.yaml:3: upstreams.api.url: environment variable API_HOST is not set") {
		t.Errorf("error does not name the variable with its line:\n%v", ps)
	}
}

// Variables are expanded in values only: a comment may mention ${VAR}
// freely, and a value cannot inject YAML structure.
func TestExpandOnlyInValues(t *testing.T) {
	const text = `# set ${UNSET_IN_COMMENT} to change the upstream
upstreams:
  api: { url: "${API_URL}" }
routes:
  - name: r
    upstream: api
    timeout: ${TIMEOUT:-5s}
    fallback: { body: "${INJECT}" }
`
	cfg, _, err := Parse("bw.yaml", []byte(text), env(map[string]string{
		"API_URL": "http://127.0.0.1:9000",
		"INJECT":  "x\nroutes: []\n",
	}), Overrides{})
	if err != nil {
		t.Fatalf("a ${VAR} in a comment or an injected newline broke parsing: %v", err)
	}
	if got := cfg.Upstreams["api"].URL; got != "http://127.0.0.1:9000" {
		t.Errorf("url = %q", got)
	}
	if got := cfg.Routes[0].Effective.Timeout.D(); got != 5e9 {
		t.Errorf("timeout from a default = %v, want 5s", got)
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].Effective.Fallback.Body != "x\nroutes: []\n" {
		t.Errorf("an expanded value changed the structure: %d routes, body %q", len(cfg.Routes), cfg.Routes[0].Effective.Fallback.Body)
	}
}

// An unquoted ${VAR} inside a flow mapping is a value, as users write it.
func TestExpandUnquotedInFlowMapping(t *testing.T) {
	const text = `upstreams: { api: { url: ${API_URL}, connect_timeout: ${CT:-2s} } }
routes: [ { name: r, upstream: api, match: { path_prefix: /${PREFIX:-v1}/ } } ]
`
	cfg, _, err := Parse("bw.yaml", []byte(text), env(map[string]string{"API_URL": "http://127.0.0.1:9000"}), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Upstreams["api"]; u.URL != "http://127.0.0.1:9000" || u.ConnectTimeout.D() != 2e9 {
		t.Errorf("url %q, connect_timeout %v", u.URL, u.ConnectTimeout)
	}
	if p := cfg.Routes[0].Match.PathPrefix; p != "/v1/" {
		t.Errorf("path_prefix = %q, want /v1/", p)
	}
}

// Breakers are named after their route or upstream: one name for both
// would make the admin API's /breakers/{name} ambiguous.
func TestBreakerNamesMustBeUnique(t *testing.T) {
	const text = `upstreams:
  api: { url: "http://127.0.0.1:9000", circuit_breaker: { failure_threshold: 5 } }
routes:
  - name: api
    upstream: api
    circuit_breaker: { failure_threshold: 3 }
  - name: other
    upstream: api
`
	_, _, err := Parse("bw.yaml", []byte(text), env(nil), Overrides{})
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Path != "routes[0].name" || ps[0].Line != 4 || !strings.Contains(ps[0].Msg, "rename the route") {
		t.Fatalf("want one problem at bw.yaml:4 routes[0].name, got:\n%v", ps)
	}
}

func TestOverridesWinOverTheFile(t *testing.T) {
	text := `listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:9901}
log: {level: debug}
` + base
	o := Overrides{Listen: "127.0.0.1:18080", Admin: "[::1]:19901", LogLevel: "warn"}
	cfg, _, err := Parse("bw.yaml", []byte(text), env(nil), o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != o.Listen || cfg.Admin.Listen != o.Admin || cfg.Log.Level != o.LogLevel {
		t.Errorf("listen, admin, level = %q, %q, %q; want the overrides %q, %q, %q",
			cfg.Listen, cfg.Admin.Listen, cfg.Log.Level, o.Listen, o.Admin, o.LogLevel)
	}

	// An override is validated like the file: a bad one is an error.
	_, _, err = Parse("bw.yaml", []byte(text), env(nil), Overrides{LogLevel: "chatty", Admin: "0.0.0.0:9901"})
	checkProblems(t, problemsOf(t, err), []want{
		{2, "admin.listen", "0.0.0.0:9901 is not loopback"},
		{3, "log.level", `got "chatty"`},
	})
}

func TestFileDefaults(t *testing.T) {
	cfg := mustParse(t, base)
	checks := []struct {
		name      string
		got, want any
	}{
		{"version", cfg.Version, 1},
		{"listen", cfg.Listen, "127.0.0.1:8080"},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9901"},
		{"admin.allow_remote", cfg.Admin.AllowRemote, false},
		{"server.read_header_timeout", cfg.Server.ReadHeaderTimeout.String(), "10s"},
		{"server.idle_timeout", cfg.Server.IdleTimeout.String(), "2m0s"},
		{"server.max_header_bytes", cfg.Server.MaxHeaderBytes, Size(64 << 10)},
		{"server.max_body", cfg.Server.MaxBody, Size(10 << 20)},
		{"server.drain_delay", cfg.Server.DrainDelay.String(), "0s"},
		{"server.shutdown_timeout", cfg.Server.ShutdownTimeout.String(), "30s"},
		{"server.body_idle_timeout", cfg.Server.BodyIdleTimeout.String(), "30s"},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"log.access_log", cfg.Log.AccessLog, true},
		{"upstream name", cfg.Upstreams["api"].Name, "api"},
		{"host_header", cfg.Upstreams["api"].HostHeader, "upstream"},
		{"connect_timeout", cfg.Upstreams["api"].ConnectTimeout.String(), "5s"},
		{"response_header_timeout", cfg.Upstreams["api"].ResponseHeaderTimeout.String(), "30s"},
		{"max_conns", cfg.Upstreams["api"].MaxConns, 0},
		{"max_idle_conns", cfg.Upstreams["api"].MaxIdleConns, 64},
		{"idle_conn_timeout", cfg.Upstreams["api"].IdleConnTimeout.String(), "1m30s"},
		{"quota", cfg.Upstreams["api"].Quota, (*Quota)(nil)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// An explicit false survives the true default.
	cfg = mustParse(t, "log: {access_log: false}\n"+base)
	if cfg.Log.AccessLog {
		t.Error("log.access_log: false was replaced by the default")
	}
}

func TestQuotaDefaults(t *testing.T) {
	cfg := mustParse(t, `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    quota: {rate: 100/1m, max_wait: 0s}
routes:
  - {name: r, upstream: api}
`)
	q := cfg.Upstreams["api"].Quota
	if q == nil {
		t.Fatal("quota is nil")
	}
	if q.Rate != (Rate{N: 100, Period: 60e9}) || q.Burst != 1 || q.MaxWait != 0 || !q.HonorRetryAfter || q.MaxPause.String() != "1m0s" {
		t.Errorf("quota = %+v, want rate 100/1m, burst 1, max_wait 0s (as written), honor_retry_after, max_pause 60s", *q)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := Load(good, Overrides{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.File != good || len(cfg.Routes) != 1 {
		t.Errorf("Load gave File %q and %d routes, want %q and 1", cfg.File, len(cfg.Routes), good)
	}

	missing := filepath.Join(dir, "missing.yaml")
	_, _, err = Load(missing, Overrides{})
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].File != missing || !strings.Contains(ps[0].Msg, "cannot read config") {
		t.Errorf("Load of a missing file = %v, want one 'cannot read config' problem", ps)
	}
}

func TestSpecExampleParses(t *testing.T) {
	cfg, warns, err := Parse("bw.yaml", []byte(fullConfig), env(map[string]string{"CAKEMAIL_TOKEN": "t0ken"}), Overrides{})
	if err != nil {
		t.Fatalf("the SPEC example does not parse:\n%v", err)
	}
	if len(warns) != 0 {
		t.Errorf("the SPEC example warns:\n%v", Problems(warns))
	}
	c := route(t, cfg, "campaigns")
	if c.SharedBreaker || c.CircuitBreaker.Window.D() != time.Minute || c.Cache.StaleIfError.D() != 24*time.Hour || c.RateLimit.Burst != 20 {
		t.Errorf("campaigns = %+v", c)
	}
	rest := route(t, cfg, "rest")
	if rest.Retry != nil || rest.Cache != nil || !rest.SharedBreaker || rest.CircuitBreaker.FailureThreshold != 5 || rest.Timeout.D() != 30*time.Second {
		t.Errorf("rest: retry %v, cache %v, shared breaker %v %+v, timeout %v; want no retry or cache, the upstream's count-based breaker, 30s",
			rest.Retry, rest.Cache, rest.SharedBreaker, rest.CircuitBreaker, rest.Timeout)
	}
	if q := cfg.Upstreams["cakemail"].Quota; q == nil || q.Burst != 10 || q.MaxPause.D() != time.Minute {
		t.Errorf("quota = %+v", q)
	}
}

func TestMCPAndTracingKeys(t *testing.T) {
	base := "upstreams: { api: { url: http://127.0.0.1:1 } }\nroutes:\n  - name: r\n    upstream: api\n"
	c := mustParse(t, base+"    match: { jsonrpc_method: tools/call, tool: [search] }\n    retry: { tools: annotated }\ntracing: { otlp_endpoint: http://otel:4318/ }\n")
	if c.MCP.MaxTools != 50 || c.MCP.Batches != "refuse" || c.Tracing.SampleRatio != 1 || c.Tracing.ServiceName != "breakwater" || c.Tracing.TracesURL() != "http://otel:4318/v1/traces" {
		t.Errorf("defaults: mcp %+v tracing %+v", c.MCP, *c.Tracing)
	}
	if got := c.Routes[0].Effective.Retry.Tools; got != "annotated" {
		t.Errorf("retry.tools = %q", got)
	}
	for _, bad := range []string{
		"    retry: { tools: some }\n",
		"    match: { jsonrpc_method: tools/list, tool: [x] }\n",
		"tracing: { sample_ratio: 2 }\n",
		"tracing: { otlp_endpoint: 'otel:4318' }\n",
		"tracing: { otlp_endpoint: 'http://u:p@otel:4318' }\n",
		"mcp: { max_tools: 0 }\n",
		"mcp: { batches: yes }\n",
	} {
		if _, _, err := parse(t, base+bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
