// Package grafana holds breakwater's Grafana dashboard; its test checks
// that every query uses only the metric names of SPEC.md.
package grafana

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// specMetrics are the names in SPEC.md, "Metrics"; histograms also have
// _bucket, _sum and _count series.
var specMetrics = map[string]bool{
	"breakwater_requests_total":                               false,
	"breakwater_request_duration_seconds":                     true,
	"breakwater_upstream_attempts_total":                      false,
	"breakwater_retries_total":                                false,
	"breakwater_retry_budget_exhausted_total":                 false,
	"breakwater_circuit_breaker_state":                        false,
	"breakwater_circuit_breaker_transitions_total":            false,
	"breakwater_bulkhead_in_flight":                           false,
	"breakwater_bulkhead_rejected_total":                      false,
	"breakwater_rate_limited_total":                           false,
	"breakwater_quota_wait_seconds":                           true,
	"breakwater_hedges_total":                                 false,
	"breakwater_cache_lookups_total":                          false,
	"breakwater_config_reloads_total":                         false,
	"breakwater_config_last_reload_success_timestamp_seconds": false,
	"breakwater_build_info":                                   false,
}

// promqlWords are the functions, aggregations and keywords the dashboard
// may use besides metric names.
var promqlWords = func() map[string]bool {
	words := map[string]bool{}
	for _, w := range strings.Fields(`sum min max avg count stddev stdvar topk bottomk quantile count_values group
		rate irate increase delta idelta deriv changes resets histogram_quantile vector scalar time
		clamp clamp_min clamp_max abs ceil floor round sqrt exp ln log2 log10 label_replace label_join
		absent absent_over_time sum_over_time avg_over_time max_over_time min_over_time count_over_time
		last_over_time timestamp sort sort_desc
		by without on ignoring group_left group_right bool and or unless offset`) {
		words[w] = true
	}
	return words
}()

// metricOf returns the metric a series name belongs to, or "".
func metricOf(series string) string {
	if _, ok := specMetrics[series]; ok {
		return series
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && specMetrics[base] {
			return base
		}
	}
	return ""
}

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers   = regexp.MustCompile(`\{[^{}]*\}`)
	ranges     = regexp.MustCompile(`\[[^\[\]]*\]`)
	grouping   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	identifier = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	number     = regexp.MustCompile(`\b\d+(\.\d+)?([eE][-+]?\d+)?\b`)
	labelVals  = regexp.MustCompile(`^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// seriesIn returns the series names an expression reads, and any word that
// is neither a known PromQL word nor a breakwater metric.
func seriesIn(expr string) (series, unknown []string) {
	s := stringLit.ReplaceAllString(expr, `""`)
	s = matchers.ReplaceAllString(s, " ")
	s = ranges.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	s = number.ReplaceAllString(s, " ")
	for _, w := range identifier.FindAllString(s, -1) {
		switch {
		case promqlWords[w]:
		case strings.HasPrefix(w, "breakwater_"):
			series = append(series, w)
		default:
			unknown = append(unknown, w)
		}
	}
	return series, unknown
}

func TestSeriesIn(t *testing.T) {
	series, unknown := seriesIn(`histogram_quantile(0.99, sum by (le, route) (rate(breakwater_request_duration_seconds_bucket{job=~"$job", route=~"a|b"}[$__rate_interval]))) / on (x) process_cpu_seconds_total`)
	if strings.Join(series, ",") != "breakwater_request_duration_seconds_bucket" || strings.Join(unknown, ",") != "process_cpu_seconds_total" {
		t.Errorf("series %v, unknown %v", series, unknown)
	}
}

// walk calls fn with every string value under key in v, and its JSON path.
func walk(v any, path string, fn func(path, key string, val string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if s, ok := c.(string); ok {
				fn(path+"."+k, k, s)
			}
			walk(c, path+"."+k, fn)
		}
	case []any:
		for i, c := range x {
			walk(c, path+"["+itoa(i)+"]", fn)
		}
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("breakwater-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("breakwater-dashboard.json is not valid JSON: %v", err)
	}
	implemented := implementedMetrics(t)
	used := map[string]bool{}
	exprs := 0
	walk(dash, "", func(path, key, val string) {
		var series, unknown []string
		switch {
		case key == "expr":
			exprs++
			series, unknown = seriesIn(val)
			if len(series) == 0 {
				t.Errorf("%s: %q reads no breakwater metric", path, val)
			}
			if strings.Count(val, "(") != strings.Count(val, ")") || strings.Count(val, "{") != strings.Count(val, "}") {
				t.Errorf("%s: unbalanced brackets in %q", path, val)
			}
		case key == "query" || key == "definition":
			if m := labelVals.FindStringSubmatch(val); m != nil {
				series = []string{m[1]}
			}
		default:
			return
		}
		for _, w := range unknown {
			t.Errorf("%s: %q uses %q, which is neither a PromQL word nor a breakwater metric", path, val, w)
		}
		for _, s := range series {
			m := metricOf(s)
			if m == "" {
				t.Errorf("%s: %q uses %s, which is not a metric in SPEC.md", path, val, s)
				continue
			}
			used[m] = true
			if !implemented[m] {
				t.Errorf("%s: %s is in SPEC.md but observe/ does not register it", path, m)
			}
		}
	})
	if exprs < 20 {
		t.Errorf("only %d queries in the dashboard", exprs)
	}
	for m := range specMetrics {
		if !used[m] {
			t.Errorf("the dashboard never shows %s", m)
		}
	}

	// Panels: unique ids, inside the 24-column grid, on the datasource variable.
	ids := map[float64]bool{}
	for _, p := range dash["panels"].([]any) {
		panel := p.(map[string]any)
		id, _ := panel["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v is used twice", id)
		}
		ids[id] = true
		g := panel["gridPos"].(map[string]any)
		if g["x"].(float64)+g["w"].(float64) > 24 {
			t.Errorf("panel %q overflows the grid: %v", panel["title"], g)
		}
		if panel["type"] != "row" {
			if ds, _ := panel["datasource"].(map[string]any); ds == nil || ds["uid"] != "${datasource}" {
				t.Errorf("panel %q does not use the ${datasource} variable", panel["title"])
			}
		}
	}
}

// implementedMetrics are the breakwater_ names that observe/ spells out.
func implementedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", "observe", "*.go"))
	names := regexp.MustCompile(`"(breakwater_[a-z_]+)"`)
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range names.FindAllStringSubmatch(string(data), -1) {
			out[m[1]] = true
		}
	}
	if len(out) == 0 {
		t.Fatal("found no metric names in observe/*.go")
	}
	return out
}
