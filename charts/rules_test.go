package charts_test

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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

// The PrometheusRule (off by default) passes helm lint --strict and
// promtool check rules, has every alert, and follows its values.
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
	file := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, file, string(spec))
	out, err := exec.Command(promtool(t), "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n--- rules ---\n%s", err, out, spec)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check rules:\n%s", out)
	}
	t.Logf("promtool check rules:\n%s", out)
}
