package charts_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// alerts are the PrometheusRule's alerts, one per thing issue #15 asks to
// be told of.
var alerts = []string{
	"BreakwaterCircuitBreakerOpen",
	"BreakwaterQuotaExhausted",
	"BreakwaterHighErrorRatio",
	"BreakwaterHighLatencyP95",
	"BreakwaterStoreFallback",
	"BreakwaterUpstreamTokenFailures",
}

// The PrometheusRule (off by default) passes helm lint --strict and the
// checks of `promtool check rules`, has every alert, and follows its values.
func TestHelmPrometheusRule(t *testing.T) {
	on := []string{"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.breakerOpenMinutes=7",
		"--set", "metrics.prometheusRule.alertLabels.team=payments"}
	if out := runHelm(t, append([]string{"lint", "--strict", chartDir}, on...)...); !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint with the PrometheusRule:\n%s", out)
	}
	rule := only(t, render(t, on...), "PrometheusRule")
	spec, err := yaml.Marshal(rule["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range get(rule, "spec", "groups", 0, "rules").([]any) {
		m := r.(map[string]any)
		got = append(got, m["alert"].(string))
		if expr, _ := m["expr"].(string); !strings.Contains(expr, `job="my-app-breakwater-metrics"`) {
			t.Errorf("%s does not select this release's series: %s", m["alert"], expr)
		}
		if team := get(m, "labels", "team"); team != "payments" {
			t.Errorf("%s: alertLabels not applied: %v", m["alert"], m["labels"])
		}
		if m["alert"] == "BreakwaterCircuitBreakerOpen" && m["for"] != "7m" {
			t.Errorf("breakerOpenMinutes=7 gave for: %v", m["for"])
		}
		if m["alert"] == "BreakwaterUpstreamTokenFailures" && !strings.Contains(m["expr"].(string), `result!="success"`) {
			t.Errorf("token failures: %s", m["expr"])
		}
	}
	for _, a := range alerts {
		if !slices.Contains(got, a) {
			t.Errorf("no alert %s (have %v)", a, got)
		}
	}

	// The spec of a PrometheusRule is a Prometheus rules file.
	n, errs := checkRules(spec)
	for _, err := range errs {
		t.Errorf("rules check: %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("--- rules ---\n%s", spec)
	}
	if n != len(alerts) {
		t.Errorf("rules check found %d rules, want %d", n, len(alerts))
	}
}

// checkRules checks a Prometheus rules file as `promtool check rules` does
// (Prometheus 3's cmd/promtool: rulefmt.Parse, unknown fields refused, then
// its default lint, duplicate-rules), with Prometheus's own parser as a
// library rather than a promtool built from the whole Prometheus module.
// It is stricter than promtool in two ways: label and metric names must
// be valid under the legacy scheme ([a-zA-Z_][a-zA-Z0-9_]*), which
// Prometheus servers older than 3.0, or run with
// metric_name_validation_scheme: legacy, require; and anything rulefmt
// warns of (a second YAML document, which Prometheus ignores) is an error.
// It returns the number of rules.
func checkRules(content []byte) (int, []error) {
	var warnings bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&warnings, nil))
	groups, errs := rulefmt.Parse(content, false, model.LegacyValidation, parser.NewParser(parser.Options{}), logger)
	if warnings.Len() > 0 {
		errs = append(errs, fmt.Errorf("rulefmt warns: %s", strings.TrimSpace(warnings.String())))
	}
	if groups == nil || len(errs) > 0 {
		return 0, errs
	}
	// promtool's duplicate-rules lint: two rules of the same name (alert
	// or record) and the same labels, the group's overridden by the
	// rule's, anywhere in the file.
	n := 0
	seen := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			labels := maps.Clone(g.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			maps.Copy(labels, r.Labels)
			key := name + toLabelSet(labels).String()
			if first, dup := seen[key]; dup {
				errs = append(errs, fmt.Errorf("duplicate rule %s with labels %v in group %q (first in group %q): might cause inconsistency while recording expressions", name, labels, g.Name, first))
				continue
			}
			seen[key] = g.Name
		}
	}
	return n, errs
}

func toLabelSet(m map[string]string) model.LabelSet {
	ls := model.LabelSet{}
	for k, v := range m {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

// The rules check refuses what promtool check rules refuses.
func TestCheckRulesRefuses(t *testing.T) {
	const good = `
groups:
  - name: a
    rules:
      - alert: Up
        expr: up == 0
        for: 5m
        labels: { severity: warning }
        annotations: { summary: '{{ $labels.instance }} is down' }
      - record: job:up:sum
        expr: sum by (job) (up)
`
	if n, errs := checkRules([]byte(good)); len(errs) > 0 || n != 2 {
		t.Fatalf("a valid rules file: %d rules, errors %v", n, errs)
	}
	for _, tc := range []struct{ name, file, want string }{
		{"bad PromQL", strings.Replace(good, "up == 0", "rate(up[5m]", 1), "could not parse expression"},
		{"unknown field", strings.Replace(good, "for: 5m", "forr: 5m", 1), "field forr not found"},
		{"alert and record", strings.Replace(good, "- alert: Up", "- alert: Up\n        record: up:x", 1), "only one of 'record' and 'alert'"},
		{"bad template", strings.Replace(good, "$labels.instance }}", "$labels.instance }", 1), `annotation "summary"`},
		{"bad label name", strings.Replace(good, "{ severity: warning }", "{ severity-level: warning }", 1), "invalid label name"},
		{"for on a recording rule", strings.Replace(good, "expr: sum by (job) (up)", "expr: sum by (job) (up)\n        for: 1m", 1), "invalid field 'for' in recording rule"},
		{"repeated group", good + "  - name: a\n    rules: []\n", `groupname: "a" is repeated`},
		{"duplicate rule", good + "      - record: job:up:sum\n        expr: sum by (job) (up)\n", "duplicate rule job:up:sum"},
		{"duplicate across groups", good + "  - name: b\n    rules:\n      - alert: Up\n        expr: up == 0\n        labels: { severity: warning }\n", "duplicate rule Up"},
		{"second document", good + "---\ngroups: []\n", "Multiple document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := checkRules([]byte(tc.file))
			if len(errs) == 0 {
				t.Fatalf("accepted:\n%s", tc.file)
			}
			if msg := fmt.Sprint(errs); !strings.Contains(msg, tc.want) {
				t.Errorf("errors %s, want one saying %q", msg, tc.want)
			}
		})
	}
	// Same name, different labels: not a duplicate (promtool agrees).
	other := good + "      - alert: Up\n        expr: up == 0\n        labels: { severity: critical }\n"
	if _, errs := checkRules([]byte(other)); len(errs) > 0 {
		t.Errorf("two Up alerts of different severity refused: %v", errs)
	}
}
