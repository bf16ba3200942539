package charts_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var manifestsDir = filepath.Join(root, "examples", "kubernetes")

// plainManifests reads the files that examples/kubernetes/kustomization.yaml lists.
func plainManifests(t *testing.T) []object {
	t.Helper()
	var k struct {
		Resources []string `yaml:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(manifestsDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if len(k.Resources) != len(files)-1 {
		t.Errorf("kustomization.yaml lists %v; the directory holds %d other YAML files", k.Resources, len(files)-1)
	}
	var objs []object
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(manifestsDir, r))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, parseManifests(t, string(data))...)
	}
	return objs
}

// The plain manifests parse, hold a valid breakwater config and a pod
// with everything a breakwater pod needs. No helm needed.
func TestKubernetesManifests(t *testing.T) {
	objs := plainManifests(t)
	for _, kind := range []string{"ConfigMap", "Service", "Deployment", "ServiceAccount"} {
		only(t, objs, kind)
	}
	config := configOf(t, objs)
	validateConfig(t, "kubernetes.yaml", config)
	checkPod(t, only(t, objs, "Deployment"), config)
}

// The plain manifests are the chart's default render, named my-app, minus
// Helm's own labels, the checksum annotation and the generated Secret
// (created with kubectl instead).
func TestKubernetesManifestsMatchChart(t *testing.T) {
	plain := plainManifests(t)
	chart := render(t, "--set", "nameOverride=my-app,fullnameOverride=my-app")

	var plainCfg, chartCfg map[string]any
	if err := yaml.Unmarshal([]byte(configOf(t, plain)), &plainCfg); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(configOf(t, chart)), &chartCfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plainCfg, chartCfg) {
		t.Errorf("breakwater config differs:\nplain: %v\nchart: %v", plainCfg, chartCfg)
	}
	for _, kind := range []string{"Deployment", "Service", "ServiceAccount"} {
		p, c := only(t, plain, kind), only(t, chart, kind)
		stripHelm(c)
		delete(p, "metadata")
		cm := c["metadata"].(map[string]any)
		delete(c, "metadata")
		if !reflect.DeepEqual(p, c) {
			pb, _ := yaml.Marshal(p)
			cb, _ := yaml.Marshal(c)
			t.Errorf("%s differs from the chart's render:\n--- plain\n%s--- chart\n%s", kind, pb, cb)
		}
		if cm["name"] != "my-app" {
			t.Errorf("chart %s is named %v", kind, cm["name"])
		}
	}
	secret := only(t, chart, "Secret")
	if !strings.Contains(readFile(t, filepath.Join(manifestsDir, "kustomization.yaml")), "kubectl create secret generic "+secret.name()+" ") {
		t.Errorf("kustomization.yaml should tell how to create the Secret %s", secret.name())
	}
}

// stripHelm removes what only a Helm render has.
func stripHelm(o object) {
	for _, labels := range []any{get(o, "metadata", "labels"), get(o, "spec", "template", "metadata", "labels")} {
		if m, ok := labels.(map[string]any); ok {
			for _, k := range []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"} {
				delete(m, k)
			}
		}
	}
	if m, ok := get(o, "spec", "template", "metadata").(map[string]any); ok {
		delete(m, "annotations") // checksum/config
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// The fleet overlay's config (three replicas, one Redis) is valid, and
// shares what it says it shares.
func TestKubernetesFleetConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifestsDir, "fleet", "configmap-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	config := configOf(t, parseManifests(t, string(data)))
	if !strings.Contains(config, "store:") || !strings.Contains(config, "shared: true") {
		t.Fatalf("fleet config without store or shared:\n%s", config)
	}
	validateConfig(t, "fleet.yaml", config)
}
