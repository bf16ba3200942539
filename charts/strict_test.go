package charts_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kubeTypes are the Kubernetes API types a manifest of this repository may
// be, by apiVersion and kind. A kind missing here is refused, so that a
// new template is checked too: add its k8s.io/api type.
var kubeTypes = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"v1/ServiceAccount":             func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// customKinds are resources defined by CRDs that k8s.io/api does not have
// (the Prometheus operator's); the tests check their fields by hand.
var customKinds = map[string]bool{
	"monitoring.coreos.com/v1/ServiceMonitor": true,
	"monitoring.coreos.com/v1/PrometheusRule": true,
}

// checkKubernetes decodes every document of a YAML stream into its
// Kubernetes API type as strictly as the API server's strict field
// validation (kubectl apply --validate=strict): a field the type does not
// have, a field in the wrong case, a duplicate field or a value of the
// wrong type is an error. Documents split as kubectl splits them.
func checkKubernetes(text string) []error {
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return errs
		}
		if err != nil {
			return append(errs, fmt.Errorf("document %d: %w", i, err))
		}
		if err := decodeStrict(doc); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", i, err))
		}
	}
}

// decodeStrict decodes one manifest into its k8s.io/api type.
func decodeStrict(doc []byte) error {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil // only comments
	}
	var meta struct{ APIVersion, Kind string }
	if err := json.Unmarshal(data, &meta); err != nil {
		return err
	}
	gvk := meta.APIVersion + "/" + meta.Kind
	if customKinds[gvk] || gvk == "kustomize.config.k8s.io/v1beta1/Kustomization" {
		return nil
	}
	newObj, ok := kubeTypes[gvk]
	if !ok {
		return fmt.Errorf("%s is not a kind these tests know; add its k8s.io/api type to kubeTypes", gvk)
	}
	strict, err := kjson.UnmarshalStrict(data, newObj(), kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("%s: %w", gvk, err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("%s: %w", gvk, errors.Join(strict...))
	}
	return nil
}

// Every YAML file under examples/kubernetes, the kustomize patches of the
// fleet overlay included, decodes strictly into the Kubernetes API types.
// (The chart's renders are checked by render, in every test.)
func TestKubernetesManifestsStrict(t *testing.T) {
	var files []string
	err := filepath.WalkDir(manifestsDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		for _, err := range checkKubernetes(readFile(t, f)) {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// The strict decoding refuses what the API server's strict field
// validation refuses; a misspelt field in the sidecar's spec among them.
func TestCheckKubernetesRefuses(t *testing.T) {
	const good = `# a comment-only document first, as helm writes them
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: my-app }
spec:
  replicas: 2
  selector: { matchLabels: { app: my-app } }
  template:
    metadata: { labels: { app: my-app } }
    spec:
      initContainers:
        - name: breakwater
          image: ghcr.io/breakwater-proxy/breakwater:v1
          imagePullPolicy: IfNotPresent
          restartPolicy: Always
          ports: [{ name: admin, containerPort: 9901 }]
          resources: { limits: { memory: 64Mi, cpu: 250m } }
      containers:
        - { name: app, image: app:v1 }
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: { name: my-app }
spec: { minAvailable: 1, selector: { matchLabels: { app: my-app } } }
`
	if errs := checkKubernetes(good); len(errs) > 0 {
		t.Fatalf("a valid Deployment refused: %v", errs)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"misspelt field", "imagePullPolicy:", "imagePullPolicyy:", `unknown field "spec.template.spec.initContainers[0].imagePullPolicyy"`},
		{"field in the wrong case", "imagePullPolicy:", "imagepullpolicy:", `unknown field "spec.template.spec.initContainers[0].imagepullpolicy"`},
		{"duplicate field", "restartPolicy: Always", "restartPolicy: Always\n          restartPolicy: Never", "restartPolicy"},
		{"wrong type", "replicas: 2", `replicas: "2"`, "replicas"},
		{"field at the wrong level", "  replicas: 2", "  replicas: 2\n  containers: []", `unknown field "spec.containers"`},
		{"misspelt field in a PodDisruptionBudget", "minAvailable:", "minAvaliable:", `unknown field "spec.minAvaliable"`},
		{"unknown kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "not a kind these tests know"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(good, tc.from, tc.to, 1)
			if bad == good {
				t.Fatalf("%q not in the manifest", tc.from)
			}
			errs := checkKubernetes(bad)
			if len(errs) == 0 {
				t.Fatalf("accepted:\n%s", bad)
			}
			if msg := fmt.Sprint(errs); !strings.Contains(msg, tc.want) {
				t.Errorf("errors %s, want one saying %q", msg, tc.want)
			}
		})
	}
}
