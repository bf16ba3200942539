package admin_test

import (
	"bufio"
	"fmt"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const metricsConfig = `version: 1
upstreams:
  echo:
    url: "{{UP}}"
    quota: { rate: 100000/1s, burst: 100000 }
routes:
  - name: cached
    match: { path_prefix: /cached }
    upstream: echo
    cache: { ttl: 1m }
  - name: limited
    match: { path_prefix: /limited }
    upstream: echo
    rate_limit: { rate: 100000/1s, burst: 100000, key: none }
    bulkhead: { max_concurrent: 4, max_wait: 1s }
`

// specMetrics are the names SPEC.md's Metrics section lists.
var specMetrics = []string{
	"breakwater_requests_total",
	"breakwater_request_duration_seconds",
	"breakwater_upstream_attempts_total",
	"breakwater_retries_total",
	"breakwater_retry_budget_exhausted_total",
	"breakwater_circuit_breaker_state",
	"breakwater_circuit_breaker_transitions_total",
	"breakwater_bulkhead_in_flight",
	"breakwater_bulkhead_rejected_total",
	"breakwater_rate_limited_total",
	"breakwater_quota_wait_seconds",
	"breakwater_hedges_total",
	"breakwater_cache_lookups_total",
	"breakwater_config_reloads_total",
	"breakwater_config_last_reload_success_timestamp_seconds",
	"breakwater_build_info",
	"breakwater_queue_waiting",
	"breakwater_queue_wait_seconds",
}

// TestMetrics: the registry passes promlint; every family scraped from
// /metrics has HELP text; every SPEC name is there with the labels SPEC
// gives, next to the Go and process collectors; and 10 000 distinct paths
// add no series.
func TestMetrics(t *testing.T) {
	e := newEnv(t, metricsConfig)
	e.failing.Store(false)
	// Touch every kind of request once, so that lazily created series exist.
	for _, p := range []string{"/cached/a", "/cached/a", "/limited/a", "/limited/fail", "/nowhere"} {
		e.get(p)
	}
	if code, _ := e.call("POST", "/reload", ""); code != 200 {
		t.Fatal("reload failed")
	}

	problems, err := testutil.GatherAndLint(e.metrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	help, types := scrape(t, e)
	for name, typ := range types {
		if strings.TrimSpace(help[name]) == "" {
			t.Errorf("%s (%s) has no HELP text", name, typ)
		}
	}
	for _, want := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds",
		"breakwater_events_dropped_total"} {
		if types[want] == "" {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	labels := map[string][]string{
		"breakwater_requests_total":                               {"code", "method", "outcome", "route", "tool"},
		"breakwater_request_duration_seconds":                     {"route", "tool"},
		"breakwater_upstream_attempts_total":                      {"result", "route", "upstream"},
		"breakwater_retries_total":                                {"reason", "route"},
		"breakwater_retry_budget_exhausted_total":                 {"route"},
		"breakwater_circuit_breaker_state":                        {"breaker", "state"},
		"breakwater_circuit_breaker_transitions_total":            {"breaker", "from", "to"},
		"breakwater_bulkhead_in_flight":                           {"route"},
		"breakwater_bulkhead_rejected_total":                      {"route"},
		"breakwater_rate_limited_total":                           {"route", "scope"},
		"breakwater_quota_wait_seconds":                           {"upstream"},
		"breakwater_hedges_total":                                 {"result", "route"},
		"breakwater_cache_lookups_total":                          {"result", "route"},
		"breakwater_config_reloads_total":                         {"result"},
		"breakwater_config_last_reload_success_timestamp_seconds": nil,
		"breakwater_build_info":                                   {"goversion", "version"},
		"breakwater_queue_waiting":                                {"name", "priority", "scope"},
		"breakwater_queue_wait_seconds":                           {"name", "priority", "scope"},
	}
	described := describedLabels(t, e)
	for _, name := range specMetrics {
		got, ok := described[name]
		if !ok {
			t.Errorf("%s is not registered", name)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(labels[name]) {
			t.Errorf("%s labels %v, want %v", name, got, labels[name])
		}
	}
	for name, typ := range map[string]string{"breakwater_request_duration_seconds": "histogram", "breakwater_quota_wait_seconds": "histogram",
		"breakwater_requests_total": "counter", "breakwater_circuit_breaker_state": "gauge", "breakwater_build_info": "gauge"} {
		if types[name] != typ {
			t.Errorf("%s is a %q, want %s", name, types[name], typ)
		}
	}
	if v := e.metric("breakwater_build_info", map[string]string{"version": "test"}); v != 1 {
		t.Errorf("build_info{version=test} = %v", v)
	}
	if v := e.metric("breakwater_requests_total", map[string]string{"route": "", "code": "404", "outcome": "rejected", "method": "GET"}); v != 1 {
		t.Errorf(`requests_total{route="",code="404"} = %v, want 1`, v)
	}
	if v := e.metric("breakwater_cache_lookups_total", map[string]string{"route": "cached", "result": "hit"}); v != 1 {
		t.Errorf(`cache_lookups_total{route="cached",result="hit"} = %v, want 1`, v)
	}
	if v := e.metric("breakwater_upstream_attempts_total", map[string]string{"route": "limited", "upstream": "echo", "result": "5xx"}); v < 1 {
		t.Errorf(`upstream_attempts_total{limited,5xx} = %v, want ≥ 1`, v)
	}

	// Cardinality: 10 000 distinct paths, a quarter of them proxied, add
	// no series. They go to the handler directly (a socket each way per
	// request would only make the test slower), still through the upstream.
	before := seriesCount(t, e)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += 4 {
				prefix := []string{"/limited", "/nowhere", "/cached", "/nowhere", "/nowhere", "/nowhere", "/nowhere", "/nowhere"}[i%8]
				req := httptest.NewRequest("GET", fmt.Sprintf("%s/%d?q=%d", prefix, i, i), nil)
				e.srv.ServeHTTP(httptest.NewRecorder(), req)
			}
		}()
	}
	wg.Wait()
	after := seriesCount(t, e)
	if after != before {
		t.Errorf("breakwater series: %d before, %d after 10 000 distinct paths", before, after)
	}
	if v := e.metric("breakwater_requests_total", map[string]string{"route": "", "code": "404"}); v != 7501 {
		t.Errorf(`requests_total{route=""} = %v, want 7501`, v)
	}
	t.Logf("%d breakwater series before and after", after)
}

// scrape reads /metrics as Prometheus text: HELP text and TYPE by family.
func scrape(t *testing.T, e *env) (help, types map[string]string) {
	t.Helper()
	resp, err := e.admin.Client().Get(e.admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	help, types = map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) >= 3 && f[0] == "#" {
			switch f[1] {
			case "HELP":
				help[f[2]] = strings.Join(f[3:], " ")
			case "TYPE":
				types[f[2]] = f[3]
			}
		}
	}
	if len(types) < 20 {
		t.Fatalf("/metrics has %d families", len(types))
	}
	return help, types
}

// describedLabels lists each registered family's variable labels, sorted,
// from the descriptors: families without a series yet count too.
func describedLabels(t *testing.T, e *env) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { e.metrics.Registry.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*variableLabels: \{([^}]*)\}\}$`)
	out := map[string][]string{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read descriptor %s", d)
		}
		var labels []string
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
			sort.Strings(labels)
		}
		out[m[1]] = labels
	}
	return out
}

// seriesCount counts breakwater's own series.
func seriesCount(t *testing.T, e *env) int {
	t.Helper()
	mfs, err := e.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		// Queue series appear when somebody first waits (four workers on a
		// bulkhead of four may), bounded by queues × priorities: they say
		// nothing about paths.
		if strings.HasPrefix(mf.GetName(), "breakwater_") && !strings.HasPrefix(mf.GetName(), "breakwater_queue_") {
			n += len(mf.Metric)
		}
	}
	return n
}
