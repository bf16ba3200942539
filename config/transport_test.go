package config

import (
	"strings"
	"testing"
)

func TestUpstreamTransport(t *testing.T) {
	const text = `
upstreams:
  plain: { url: "http://127.0.0.1:9" }
  tls: { url: "https://api.example.com" }
  forced: { url: "http://127.0.0.1:9", transport: standard }
routes:
  - { name: r, match: { path_prefix: / }, upstream: plain }
`
	cfg := mustParse(t, text)
	for name, want := range map[string]string{"plain": "fast", "tls": "standard", "forced": "standard"} {
		if got := cfg.Upstreams[name].Transport; got != want {
			t.Errorf("%s: transport %q, want %q", name, got, want)
		}
	}
	if s := Summary(cfg).String(); !strings.Contains(s, "plain  http://127.0.0.1:9  (transport fast)") {
		t.Errorf("validate's summary does not show the transport:\n%s", s)
	}
	if !strings.Contains(string(cfg.JSON()), `"transport": "fast"`) && !strings.Contains(string(cfg.JSON()), `"transport":"fast"`) {
		t.Errorf("/config does not show the transport: %s", cfg.JSON())
	}

	over, _, err := Parse("bw.yaml", []byte(text), env(nil), Overrides{Transport: "standard"})
	if err != nil {
		t.Fatal(err)
	}
	if got := over.Upstreams["plain"].Transport; got != "standard" {
		t.Errorf("with the standard override: %q", got)
	}

	_, _, err = parse(t, `
upstreams:
  tls: { url: "https://api.example.com", transport: fast }
  odd: { url: "http://127.0.0.1:9", transport: quick }
routes:
  - { name: r, match: { path_prefix: / }, upstream: tls }
`)
	ps := problemsOf(t, err)
	text2 := ps.Error()
	for _, want := range []string{"bw.yaml:3: upstreams.tls.transport: fast is HTTP/1.1 over plain http:// only", `bw.yaml:4: upstreams.odd.transport: want fast or standard, got "quick"`} {
		if !strings.Contains(text2, want) {
			t.Errorf("missing %q in:\n%s", want, text2)
		}
	}
}
