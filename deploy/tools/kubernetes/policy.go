package kubernetes

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// Policy is what every rendered workload must satisfy.
//
//   - every long-running container: liveness and readiness probes, CPU and
//     memory requests and a memory limit, runs as non-root, read-only root
//     file system, no privilege escalation, every capability dropped, not
//     privileged;
//   - init containers: resources, read-only root, no escalation; root only
//     for a container that runs `chown` with no capability but CHOWN (the
//     agent's hostPath state directory);
//   - pods: RuntimeDefault seccomp, no service account token;
//   - a StatefulSet names a headless Service that publishes not-ready
//     addresses (memberlist discovery) and has a PodDisruptionBudget;
//   - every workload is covered by a NetworkPolicy;
//   - every Secret and ConfigMap a pod uses is rendered, or is one the
//     overlay says is created out of band (external).
type Policy struct {
	// External Secrets and ConfigMaps, created outside kustomize.
	External []string
}

// Check returns every violation in the rendered objects.
func (p Policy) Check(objs []runtime.Object) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	secrets, configs := map[string]bool{}, map[string]bool{}
	services := map[string]*corev1.Service{}
	var pdbs []*policyv1.PodDisruptionBudget
	var netpols []*networkingv1.NetworkPolicy
	type workload struct {
		kind, name string
		labels     map[string]string
		spec       corev1.PodSpec
	}
	var workloads []workload
	var statefulsets []*appsv1.StatefulSet
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.Secret:
			secrets[v.Name] = true
		case *corev1.ConfigMap:
			configs[v.Name] = true
		case *corev1.Service:
			services[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, v)
		case *networkingv1.NetworkPolicy:
			netpols = append(netpols, v)
		case *appsv1.StatefulSet:
			statefulsets = append(statefulsets, v)
			workloads = append(workloads, workload{"StatefulSet", v.Name, v.Spec.Template.Labels, v.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			workloads = append(workloads, workload{"DaemonSet", v.Name, v.Spec.Template.Labels, v.Spec.Template.Spec})
		case *appsv1.Deployment:
			workloads = append(workloads, workload{"Deployment", v.Name, v.Spec.Template.Labels, v.Spec.Template.Spec})
		case *corev1.Namespace, *corev1.ServiceAccount:
		default:
			bad("%T: a kind the policy does not know", o)
		}
	}
	if len(workloads) == 0 {
		bad("no workload rendered")
	}
	for _, w := range workloads {
		where := w.kind + "/" + w.name
		ps := w.spec
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			bad("%s: mounts a service account token", where)
		}
		if ps.SecurityContext == nil || ps.SecurityContext.SeccompProfile == nil ||
			ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			bad("%s: no RuntimeDefault seccomp profile", where)
		}
		podNonRoot := ps.SecurityContext != nil && ps.SecurityContext.RunAsNonRoot != nil && *ps.SecurityContext.RunAsNonRoot
		for _, c := range ps.Containers {
			cw := where + " container " + c.Name
			if c.LivenessProbe == nil || c.ReadinessProbe == nil {
				bad("%s: needs liveness and readiness probes", cw)
			}
			checkResources(cw, c, bad)
			sc := c.SecurityContext
			if sc == nil {
				bad("%s: no securityContext", cw)
				continue
			}
			nonRoot := podNonRoot
			if sc.RunAsNonRoot != nil {
				nonRoot = *sc.RunAsNonRoot
			}
			if !nonRoot || (sc.RunAsUser != nil && *sc.RunAsUser == 0) {
				bad("%s: may run as root", cw)
			}
			checkHardening(cw, sc, bad)
			if sc.Capabilities == nil || len(sc.Capabilities.Add) > 0 {
				bad("%s: adds capabilities", cw)
			}
		}
		for _, c := range ps.InitContainers {
			cw := where + " init container " + c.Name
			checkResources(cw, c, bad)
			sc := c.SecurityContext
			if sc == nil {
				bad("%s: no securityContext", cw)
				continue
			}
			checkHardening(cw, sc, bad)
			root := sc.RunAsUser != nil && *sc.RunAsUser == 0
			if root {
				if len(c.Command) == 0 || c.Command[0] != "chown" || sc.Capabilities == nil ||
					!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
					bad("%s: runs as root for something other than chown with CAP_CHOWN alone", cw)
				}
			} else if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
				bad("%s: adds capabilities", cw)
			}
		}
		for _, ref := range references(ps) {
			known := ref.secret && secrets[ref.name] || !ref.secret && configs[ref.name]
			if !known && !slices.Contains(p.External, ref.name) {
				bad("%s: uses %s %q, which is neither rendered nor declared external", where, ref.kind(), ref.name)
			}
		}
		covered := false
		for _, np := range netpols {
			sel, err := metav1LabelSelector(np.Spec.PodSelector)
			if err == nil && sel.Matches(labels.Set(w.labels)) {
				covered = true
			}
		}
		if !covered {
			bad("%s: no NetworkPolicy selects its pods", where)
		}
	}
	for _, ss := range statefulsets {
		svc := services[ss.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
			bad("StatefulSet/%s: serviceName %q is not a headless Service publishing not-ready addresses", ss.Name, ss.Spec.ServiceName)
		}
		if len(ss.Spec.VolumeClaimTemplates) == 0 {
			bad("StatefulSet/%s: no volume for its WAL", ss.Name)
		}
		covered := false
		for _, pdb := range pdbs {
			sel, err := metav1LabelSelector(*pdb.Spec.Selector)
			if err == nil && sel.Matches(labels.Set(ss.Spec.Template.Labels)) {
				covered = true
			}
		}
		if !covered {
			bad("StatefulSet/%s: no PodDisruptionBudget", ss.Name)
		}
	}
	return errs
}

func checkResources(where string, c corev1.Container, bad func(string, ...any)) {
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		bad("%s: needs CPU and memory requests and a memory limit", where)
	}
}

func checkHardening(where string, sc *corev1.SecurityContext, bad func(string, ...any)) {
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("%s: root file system is writable", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("%s: privilege escalation allowed", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		bad("%s: does not drop every capability", where)
	}
}

type ref struct {
	name   string
	secret bool
}

func (r ref) kind() string {
	if r.secret {
		return "Secret"
	}
	return "ConfigMap"
}

// references lists the Secrets and ConfigMaps a pod uses.
func references(ps corev1.PodSpec) []ref {
	var out []ref
	for _, v := range ps.Volumes {
		if v.Secret != nil {
			out = append(out, ref{v.Secret.SecretName, true})
		}
		if v.ConfigMap != nil {
			out = append(out, ref{v.ConfigMap.Name, false})
		}
	}
	for _, c := range append(slices.Clone(ps.Containers), ps.InitContainers...) {
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				out = append(out, ref{e.SecretRef.Name, true})
			}
			if e.ConfigMapRef != nil {
				out = append(out, ref{e.ConfigMapRef.Name, false})
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				out = append(out, ref{e.ValueFrom.SecretKeyRef.Name, true})
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				out = append(out, ref{e.ValueFrom.ConfigMapKeyRef.Name, false})
			}
		}
	}
	return out
}

func metav1LabelSelector(s metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(&s)
}
