package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
)

// TestAddonObjectsMapToResources: applyObject maps each add-on object to its resource without
// discovery; this pins what that mapping must give for the kinds the manifests use.
func TestAddonObjectsMapToResources(t *testing.T) {
	want := map[string]struct {
		resource   string
		namespaced bool
	}{
		"ServiceAccount":     {"serviceaccounts", true},
		"ClusterRole":        {"clusterroles", false},
		"ClusterRoleBinding": {"clusterrolebindings", false},
		"Deployment":         {"deployments", true},
		"Service":            {"services", true},
		"IngressClass":       {"ingressclasses", false},
	}
	objs, err := addonObjects()
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("no add-on objects")
	}
	for _, o := range objs {
		w, ok := want[o.GetKind()]
		if !ok {
			t.Errorf("%s %s: kind not known to this test; check its resource and scope and add it", o.GetKind(), o.GetName())
			continue
		}
		gvr, _ := meta.UnsafeGuessKindToResource(o.GroupVersionKind())
		if gvr.Resource != w.resource {
			t.Errorf("%s %s: resource %q, want %q", o.GetKind(), o.GetName(), gvr.Resource, w.resource)
		}
		if (o.GetNamespace() != "") != w.namespaced {
			t.Errorf("%s %s: namespace %q, but the kind is namespaced=%v", o.GetKind(), o.GetName(), o.GetNamespace(), w.namespaced)
		}
	}
}
