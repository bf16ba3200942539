package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestDemo runs the demo in its short form (5 s per side) with a freshly
// built breakwater, and checks the point it makes: clients see fewer
// errors through breakwater than straight at the flaky API.
//
// Five seconds are few: on a machine busy compiling other packages (a
// cold `make test`), breakwater's 600 ms per-try timeouts can fire on
// scheduling delays alone, open the breaker twice and fail the order POSTs,
// which have no fallback (seen once in about fifteen runs). So a run that
// misses the point is logged and run once more; the test fails only when
// both miss it.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo sends traffic for 10 s; skipped with -short")
	}
	var res *result
	for try := 1; try <= 2; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		var out bytes.Buffer
		var err error
		res, err = run(ctx, options{duration: 5 * time.Second, clients: 6}, &out)
		cancel()
		t.Logf("demo output (run %d):\n%s", try, out.String())
		if err != nil {
			t.Fatal(err)
		}
		if res.through.errors < res.direct.errors {
			break
		}
		if try == 2 {
			t.Errorf("client-visible errors: %d through breakwater, %d direct, in both runs; want fewer through breakwater",
				res.through.errors, res.direct.errors)
		}
	}
	if res.through.requests == 0 || res.direct.requests == 0 {
		t.Errorf("no traffic: %d direct, %d through breakwater", res.direct.requests, res.through.requests)
	}
	// What breakwater says it did must show up in its admin API.
	if res.admin.attempts == 0 {
		t.Error("breakwater_upstream_attempts_total is 0 after the run")
	}
	if res.admin.cacheHits+res.admin.stale == 0 {
		t.Error("no cache hits and no stale answers: the items route's cache did nothing")
	}
	if len(res.admin.breakers) == 0 {
		t.Error("/breakers lists no breaker; the demo config has one on the shop upstream")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP x_total A counter.
# TYPE x_total counter
x_total{route="a",outcome="stale"} 3
x_total{route="b\"q",outcome="up"} 1.5e+01
plain 7
`
	got, err := parseMetrics(bytes.NewBufferString(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d samples, want 3: %+v", len(got), got)
	}
	if got[0].name != "x_total" || got[0].labels["outcome"] != "stale" || got[0].value != 3 {
		t.Errorf("sample 0 = %+v", got[0])
	}
	if got[1].labels["route"] != `b"q` || got[1].value != 15 {
		t.Errorf("sample 1 = %+v", got[1])
	}
	if got[2].name != "plain" || got[2].value != 7 {
		t.Errorf("sample 2 = %+v", got[2])
	}
}
