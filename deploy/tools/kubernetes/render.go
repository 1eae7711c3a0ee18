// Package kubernetes renders Tally's kustomize overlays (with the
// kustomize library, the same code as `kubectl kustomize`), decodes every
// object strictly against the Kubernetes API types and checks it against
// our deployment policy. The tests run it on every overlay of
// deploy/kubernetes/overlays.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Render runs kustomize on the directory and returns the YAML stream.
func Render(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return m.AsYaml()
}

// scheme knows the API groups our manifests may use; anything else is
// refused (a typo in apiVersion or kind included).
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Decode splits a YAML stream and decodes each document strictly: unknown
// and duplicate fields are errors, as `kubectl apply --validate=strict`
// makes them.
func Decode(stream []byte) ([]runtime.Object, error) {
	s := scheme()
	ser := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufioReader(stream))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := ser.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", firstLines(doc), err)
		}
		objs = append(objs, obj)
	}
}

func firstLines(doc []byte) string {
	lines := bytes.SplitN(doc, []byte("\n"), 4)
	if len(lines) > 3 {
		lines = lines[:3]
	}
	return string(bytes.Join(lines, []byte(" | ")))
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
