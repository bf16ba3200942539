package config

import "testing"

func TestQueueKeysAreChecked(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		wants []want
	}{
		{
			name: "route priority",
			yaml: base + `    priority: urgent
`,
			wants: []want{{6, "routes[0].priority", `want high, normal or low, got "urgent"`}},
		},
		{
			name:  "defaults priority",
			yaml:  "defaults:\n  priority: top\n" + base,
			wants: []want{{2, "defaults.priority", `want high, normal or low, got "top"`}},
		},
		{
			name: "negative max_queue",
			yaml: base + `    bulkhead: {max_concurrent: 2, max_queue: -1}
`,
			wants: []want{{6, "routes[0].bulkhead.max_queue", "must not be negative (0 = nobody waits)"}},
		},
		{
			name: "concurrency needs max_concurrent",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    concurrency: {max_queue: 5}
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{4, "upstreams.api.concurrency.max_concurrent", "must be at least 1"}},
		},
		{
			name: "concurrency unknown key",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    concurrency: {max_concurrent: 2, max_queu: 5}
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{4, "upstreams.api.concurrency.max_queu", `did you mean "max_queue"?`}},
		},
		{
			name: "concurrency negative wait (the duration decoder's own check)",
			yaml: `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    concurrency:
      max_concurrent: 2
      max_wait: -1s
routes:
  - {name: r, upstream: api}
`,
			wants: []want{{6, "upstreams.api.concurrency.max_wait", "must not be negative"}},
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

func TestQueueDefaultsAndInheritance(t *testing.T) {
	cfg := mustParse(t, `upstreams:
  api:
    url: "http://127.0.0.1:9000"
    concurrency: {max_concurrent: 8}
    priority: low
  other: {url: "http://127.0.0.1:9001", concurrency: off}
defaults:
  bulkhead: {max_concurrent: 4, max_wait: 1s}
routes:
  - {name: r, upstream: api}
  - {name: s, upstream: api, priority: high}
  - {name: o, upstream: other}
`)
	c := cfg.Upstreams["api"].Concurrency
	if c == nil || c.MaxConcurrent != 8 || c.MaxQueue != 1000 || c.MaxWait != 0 {
		t.Errorf("concurrency = %+v, want 8 slots, max_queue 1000, max_wait 0s", c)
	}
	if cfg.Upstreams["other"].Concurrency != nil {
		t.Error("concurrency: off kept a block")
	}
	r, s, o := cfg.Routes[0].Effective, cfg.Routes[1].Effective, cfg.Routes[2].Effective
	if r.Priority != "low" || s.Priority != "high" || o.Priority != "normal" {
		t.Errorf("priorities %s %s %s, want low (from its upstream), high (its own), normal (the default)", r.Priority, s.Priority, o.Priority)
	}
	if b := r.Bulkhead; b == nil || b.MaxQueue != 1000 || b.MaxWait.D() != 1e9 {
		t.Errorf("bulkhead = %+v, want max_queue 1000 by default and the defaults' max_wait", b)
	}
}
