package charts_test

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// valueSets are the values files the chart ships with.
var valueSets = []struct {
	name   string
	args   []string
	target string // the Service's targetPort
}{
	{"default", nil, "http"},
	{"egress", []string{"-f", filepath.Join(chartDir, "values-egress.yaml")}, "app"},
}

func TestHelmLint(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			out := runHelm(t, append([]string{"lint", "--strict", chartDir}, vs.args...)...)
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

func render(t *testing.T, args ...string) []object {
	t.Helper()
	out := runHelm(t, append([]string{"template", "my-app", chartDir, "--kube-version", kubeVersion}, args...)...)
	return parseManifests(t, out)
}

func TestHelmTemplate(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			objs := render(t, vs.args...)
			for _, kind := range []string{"ConfigMap", "Secret", "Service", "Deployment", "ServiceAccount"} {
				only(t, objs, kind)
			}
			for _, kind := range []string{"ServiceMonitor", "PrometheusRule"} {
				if n := len(find(objs, kind)); n != 0 {
					t.Errorf("a %s is rendered by default", kind)
				}
			}
			config := configOf(t, objs)
			validateConfig(t, vs.name+".yaml", config)
			dep := only(t, objs, "Deployment")
			checkPod(t, dep, config)

			sum, _ := get(dep, "spec", "template", "metadata", "annotations", "checksum/config").(string)
			if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
				t.Errorf("checksum/config annotation = %q, want a sha256", sum)
			}
			secret := only(t, objs, "Secret")
			if token, _ := get(secret, "data", "admin-token").(string); token == "" {
				t.Errorf("the generated Secret %s has no admin-token", secret.name())
			}
			if ref := get(sidecar(t, dep), "env", envIndex(sidecar(t, dep), "BREAKWATER_ADMIN_TOKEN"), "valueFrom", "secretKeyRef", "name"); ref != secret.name() {
				t.Errorf("BREAKWATER_ADMIN_TOKEN comes from Secret %v, want the generated %s", ref, secret.name())
			}
			svc := only(t, objs, "Service")
			if got := get(svc, "spec", "ports", 0, "targetPort"); got != vs.target {
				t.Errorf("Service targetPort = %v, want %s", got, vs.target)
			}
		})
	}
}

// A change of config changes the checksum, so that the pods roll.
func TestHelmConfigChecksum(t *testing.T) {
	sum := func(args ...string) string {
		s, _ := get(only(t, render(t, args...), "Deployment"), "spec", "template", "metadata", "annotations", "checksum/config").(string)
		return s
	}
	a, b := sum(), sum("--set", "config.log.level=debug")
	if a == "" || a == b {
		t.Errorf("checksum/config is %q before and %q after a config change", a, b)
	}
}

func TestHelmServiceMonitor(t *testing.T) {
	objs := render(t, "--set", "metrics.serviceMonitor.enabled=true")
	sm := only(t, objs, "ServiceMonitor")
	if got := get(sm, "spec", "endpoints", 0, "port"); got != "admin" {
		t.Errorf("ServiceMonitor scrapes port %v, want admin", got)
	}
	if got := get(sm, "spec", "endpoints", 0, "path"); got != "/metrics" {
		t.Errorf("ServiceMonitor scrapes path %v, want /metrics", got)
	}
	sel, _ := get(sm, "spec", "selector", "matchLabels").(map[string]any)
	matched := 0
	for _, svc := range find(objs, "Service") {
		labels, _ := get(svc, "metadata", "labels").(map[string]any)
		if matches(sel, labels) {
			matched++
			if get(svc, "spec", "ports", 0, "name") != "admin" || get(svc, "spec", "ports", 0, "targetPort") != "admin" {
				t.Errorf("metrics Service %s does not expose the admin port: %v", svc.name(), get(svc, "spec", "ports"))
			}
		}
	}
	if matched != 1 {
		t.Errorf("the ServiceMonitor's selector %v matches %d Services, want 1 (the metrics Service)", sel, matched)
	}
}

func matches(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestHelmExistingSecret(t *testing.T) {
	objs := render(t, "--set", "breakwater.adminToken.existingSecret=ops-tokens", "--set", "breakwater.adminToken.key=breakwater")
	if n := len(find(objs, "Secret")); n != 0 {
		t.Errorf("%d Secrets rendered with adminToken.existingSecret set, want none", n)
	}
	bw := sidecar(t, only(t, objs, "Deployment"))
	ref := get(bw, "env", envIndex(bw, "BREAKWATER_ADMIN_TOKEN"), "valueFrom", "secretKeyRef")
	if get(ref, "name") != "ops-tokens" || get(ref, "key") != "breakwater" {
		t.Errorf("BREAKWATER_ADMIN_TOKEN from %v, want ops-tokens/breakwater", ref)
	}
}

// The config may be given as one string, comments and key order kept.
func TestHelmConfigAsString(t *testing.T) {
	cfg := `version: 1
listen: 0.0.0.0:8081   # a comment that must survive
admin: { listen: 0.0.0.0:9902, allow_remote: true, token: "${BREAKWATER_ADMIN_TOKEN}" }
upstreams: { app: { url: "http://127.0.0.1:{{ .Values.app.port }}" } }
routes:
  - { name: app, match: { path_prefix: / }, upstream: app, retry: { on: [connect_error] } }
`
	file := filepath.Join(t.TempDir(), "values.yaml")
	writeFile(t, file, "config: |\n"+indent(cfg, "  "))
	objs := render(t, "-f", file)
	config := configOf(t, objs)
	if !strings.Contains(config, "a comment that must survive") || !strings.Contains(config, "127.0.0.1:5678") {
		t.Errorf("rendered config:\n%s", config)
	}
	validateConfig(t, "string.yaml", config)
	checkPod(t, only(t, objs, "Deployment"), config)
}

// The chart refuses addresses that the pod could not be reached on.
func TestHelmRefusesLoopback(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"config.admin.listen=127.0.0.1:9901", "kubelet probes cannot reach a loopback address"},
		{"config.listen=127.0.0.1:8080", "a Service cannot reach a loopback address"},
		{"service.target=nowhere", "service.target must be breakwater or app"},
	} {
		_, err := tryHelm(t, "template", "my-app", chartDir, "--kube-version", kubeVersion, "--set", tc.set)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: err = %v, want %q", tc.set, err, tc.want)
		}
	}
}

// checkPod checks what every breakwater pod needs, in the chart's renders
// and in the plain manifests alike.
func checkPod(t *testing.T, dep object, configText string) {
	t.Helper()
	var cfg struct {
		Listen string
		Admin  struct {
			Listen      string
			AllowRemote bool `yaml:"allow_remote"`
			Token       string
		}
	}
	if err := yaml.Unmarshal([]byte(configText), &cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	pod := get(dep, "spec", "template", "spec")
	if got := get(pod, "securityContext", "seccompProfile", "type"); got != "RuntimeDefault" {
		t.Errorf("pod seccompProfile = %v, want RuntimeDefault", got)
	}
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Errorf("pod securityContext.runAsNonRoot is not true")
	}
	bw := sidecar(t, dep)
	if get(bw, "restartPolicy") != "Always" {
		t.Errorf("breakwater init container restartPolicy = %v, want Always (a native sidecar)", get(bw, "restartPolicy"))
	}
	ports := map[string]int{}
	for _, p := range asList(get(bw, "ports")) {
		name, _ := get(p, "name").(string)
		port, _ := get(p, "containerPort").(int)
		ports[name] = port
	}
	if want := portOf(cfg.Listen); ports["http"] != want {
		t.Errorf("container port http = %d, config listen is %s", ports["http"], cfg.Listen)
	}
	if want := portOf(cfg.Admin.Listen); ports["admin"] != want {
		t.Errorf("container port admin = %d, config admin.listen is %s", ports["admin"], cfg.Admin.Listen)
	}
	if strings.HasPrefix(cfg.Admin.Listen, "127.") || strings.HasPrefix(cfg.Admin.Listen, "localhost") {
		t.Errorf("admin.listen %s is loopback: kubelet probes cannot reach it", cfg.Admin.Listen)
	}
	if !cfg.Admin.AllowRemote || cfg.Admin.Token != "${BREAKWATER_ADMIN_TOKEN}" {
		t.Errorf("admin: allow_remote %v, token %q; want true and ${BREAKWATER_ADMIN_TOKEN}", cfg.Admin.AllowRemote, cfg.Admin.Token)
	}
	for probe, path := range map[string]string{"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if get(bw, probe, "httpGet", "path") != path || get(bw, probe, "httpGet", "port") != "admin" {
			t.Errorf("breakwater %s = %v, want GET %s on the admin port", probe, get(bw, probe), path)
		}
	}
	for _, c := range append(asList(get(pod, "initContainers")), asList(get(pod, "containers"))...) {
		name := get(c, "name")
		sc := get(c, "securityContext")
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "runAsNonRoot") != true || get(sc, "allowPrivilegeEscalation") != false {
			t.Errorf("container %v securityContext = %v", name, sc)
		}
		if drop, _ := get(sc, "capabilities", "drop").([]any); !slices.Contains(drop, any("ALL")) {
			t.Errorf("container %v does not drop ALL capabilities", name)
		}
		if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
			t.Errorf("container %v has no resource requests or limits", name)
		}
	}
	// Every ${VAR} without a default must be set in breakwater's environment.
	for _, m := range envRef.FindAllStringSubmatch(configText, -1) {
		if m[2] == "" && envIndex(bw, m[1]) < 0 {
			t.Errorf("the config uses ${%s}, which the breakwater container's env does not set", m[1])
		}
	}
	if ref := get(bw, "env", envIndex(bw, "BREAKWATER_ADMIN_TOKEN"), "valueFrom", "secretKeyRef"); ref == nil {
		t.Errorf("BREAKWATER_ADMIN_TOKEN does not come from a Secret")
	}
	// The config file: the ConfigMap's directory, where -config points.
	mounted := false
	for _, vm := range asList(get(bw, "volumeMounts")) {
		if get(vm, "mountPath") == "/etc/breakwater" && get(vm, "subPath") == nil {
			mounted = true
		}
	}
	args, _ := get(bw, "args").([]any)
	if !mounted || !slices.Contains(args, any("/etc/breakwater/breakwater.yaml")) {
		t.Errorf("breakwater must read /etc/breakwater/breakwater.yaml from a ConfigMap directory mount: args %v, mounts %v", args, get(bw, "volumeMounts"))
	}
}

// sidecar is the breakwater init container.
func sidecar(t *testing.T, dep object) any {
	t.Helper()
	for _, c := range asList(get(dep, "spec", "template", "spec", "initContainers")) {
		if get(c, "name") == "breakwater" {
			return c
		}
	}
	t.Fatalf("Deployment %s has no breakwater init container", dep.name())
	return nil
}

// envIndex is the index of the env var name in a container, or -1.
func envIndex(c any, name string) int {
	for i, e := range asList(get(c, "env")) {
		if get(e, "name") == name {
			return i
		}
	}
	return -1
}

func asList(v any) []any { l, _ := v.([]any); return l }

func portOf(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return 0
	}
	n := 0
	for _, c := range addr[i+1:] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// With store.redis.url set, the config gains a store block (replicas from
// replicaCount) and the password comes from the named Secret.
func TestHelmStore(t *testing.T) {
	objs := render(t, "--set", "store.redis.url=redis://redis.default.svc:6379/0",
		"--set", "store.redis.existingSecret=redis", "--set", "replicaCount=3")
	config := configOf(t, objs)
	for _, want := range []string{"store:", `url: "redis://redis.default.svc:6379/0"`, "password: ${BREAKWATER_REDIS_PASSWORD}", "replicas: 3", "on_error: local"} {
		if !strings.Contains(config, want) {
			t.Errorf("rendered config lacks %q:\n%s", want, config)
		}
	}
	validateConfig(t, "store.yaml", config)
	bw := sidecar(t, only(t, objs, "Deployment"))
	ref := get(bw, "env", envIndex(bw, "BREAKWATER_REDIS_PASSWORD"), "valueFrom", "secretKeyRef")
	if get(ref, "name") != "redis" || get(ref, "key") != "redis-password" {
		t.Errorf("BREAKWATER_REDIS_PASSWORD from %v, want redis/redis-password", ref)
	}
	if strings.Contains(configOf(t, render(t)), "store:") {
		t.Error("a store block rendered without store.redis.url")
	}
}
