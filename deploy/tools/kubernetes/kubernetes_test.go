package kubernetes

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

const overlays = "../../kubernetes/overlays"

// external are the Secrets each overlay expects to be created out of band
// (docs/operations.md gives the commands).
var external = map[string][]string{
	"production": {"tally-aggregator-secrets", "tally-aggregator-tls", "tally-agent-secrets", "tally-agent-tls"},
	"sidecar":    {"tally-agent-secrets", "tally-agent-tls"},
	"example":    nil,
}

func overlayDirs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(overlays)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) < 3 {
		t.Fatalf("overlays: %v", dirs)
	}
	return dirs
}

// Every overlay renders, every object decodes strictly against the
// Kubernetes API types, and passes the policy.
func TestOverlays(t *testing.T) {
	for _, o := range overlayDirs(t) {
		t.Run(o, func(t *testing.T) {
			ext, ok := external[o]
			if !ok {
				t.Fatalf("overlay %s: add its external Secrets to the test", o)
			}
			stream, err := Render(filepath.Join(overlays, o))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Decode(stream)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range (Policy{External: ext}).Check(objs) {
				t.Error(e)
			}
			t.Logf("%s: %d objects", o, len(objs))
		})
	}
}

// kubectl's own kustomize (when installed) renders the same objects as the
// library the tests use.
func TestKubectlAgrees(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed; the kustomize library renders in TestOverlays")
	}
	for _, o := range overlayDirs(t) {
		out, err := exec.Command(kubectl, "kustomize", filepath.Join(overlays, o)).Output()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v", o, err)
		}
		lib, err := Render(filepath.Join(overlays, o))
		if err != nil {
			t.Fatal(err)
		}
		a, b := canonical(t, out), canonical(t, lib)
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Errorf("%s: kubectl kustomize and the kustomize library disagree:\nkubectl: %v\nlibrary: %v", o, a, b)
		}
	}
}

func canonical(t *testing.T, stream []byte) []string {
	t.Helper()
	objs, err := Decode(stream)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

// The checks can fail: an unknown field is refused by the decoder, and
// the policy catches a missing probe, a writable root, a root container,
// a missing limit and a Secret nobody provides.
func TestChecksBite(t *testing.T) {
	stream, err := Render(filepath.Join(overlays, "production"))
	if err != nil {
		t.Fatal(err)
	}
	typo := bytes.Replace(stream, []byte("terminationGracePeriodSeconds: 60"), []byte("terminationGracePeriodSecond: 60"), 1)
	if _, err := Decode(typo); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("unknown field: %v", err)
	}
	for name, mutate := range map[string]func(*corev1.PodSpec){
		"needs liveness and readiness probes": func(ps *corev1.PodSpec) { ps.Containers[0].ReadinessProbe = nil },
		"root file system is writable":        func(ps *corev1.PodSpec) { f := false; ps.Containers[0].SecurityContext.ReadOnlyRootFilesystem = &f },
		"may run as root": func(ps *corev1.PodSpec) {
			root := int64(0)
			ps.Containers[0].SecurityContext.RunAsUser = &root
		},
		"memory limit":            func(ps *corev1.PodSpec) { delete(ps.Containers[0].Resources.Limits, corev1.ResourceMemory) },
		"neither rendered nor":    func(ps *corev1.PodSpec) { ps.Volumes[0].ConfigMap.Name = "nobody-made-me" },
		"service account token":   func(ps *corev1.PodSpec) { ps.AutomountServiceAccountToken = nil },
		"something other than ch": func(ps *corev1.PodSpec) { ps.InitContainers[0].Command = []string{"sh", "-c", "id"} },
	} {
		objs, err := Decode(stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			switch v := o.(type) {
			case *appsv1.DaemonSet:
				mutate(&v.Spec.Template.Spec)
			}
		}
		errs := (Policy{External: external["production"]}).Check(objs)
		if !containsErr(errs, name) {
			t.Errorf("mutation %q not caught: %v", name, errs)
		}
	}
}

func containsErr(errs []error, s string) bool {
	for _, e := range errs {
		if strings.Contains(e.Error(), s) {
			return true
		}
	}
	return false
}

// The configuration files the overlays ship are valid for the binaries:
// each is checked with the real binary's -check-config, with the
// environment the pods give it (downward API values and the example
// Secrets' placeholders).
func TestShippedConfigsAreValid(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./agent/cmd/tally-agent", "./aggregator/cmd/tally-aggregator")
	build.Dir = "../../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "POD_NAME=tally-aggregator-0", "POD_IP=10.1.2.3", "NAMESPACE=tally", "NODE_NAME=node-1")
	for _, f := range []string{"aggregator.env", "agent.env"} {
		b, err := os.ReadFile(filepath.Join(overlays, "example/secrets", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				env = append(env, line)
			}
		}
	}
	checked := 0
	for _, o := range overlayDirs(t) {
		stream, err := Render(filepath.Join(overlays, o))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Decode(stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			cm, ok := obj.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			for key, data := range cm.Data {
				program := map[string]string{"tally-agent.yaml": "tally-agent", "tally-aggregator.yaml": "tally-aggregator"}[key]
				if program == "" {
					continue
				}
				path := filepath.Join(t.TempDir(), key)
				if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(filepath.Join(bin, program), "-check-config", "-config", path)
				cmd.Env = env
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s: ConfigMap %s key %s: %v\n%s", o, cm.Name, key, err, out)
				}
				checked++
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d configurations checked", checked)
	}
}
