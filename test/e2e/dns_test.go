package e2e

import (
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestDNSFromPod queries the cluster DNS with dig from inside a pod, as a user debugging DNS would.
func TestDNSFromPod(t *testing.T) {
	ns := testNamespace(t)
	pods := backends(t, ns, "web", 2)
	svc := createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-headless"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	createService(t, ns, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "ext"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "web." + ns + ".svc.cluster.local"},
	})
	from := pods[0].Name
	fqdn := "web." + ns + ".svc.cluster.local"
	dig := func(args ...string) string {
		out, err := execIn(t, ns, from, append([]string{"dig", "+short", "+tries=2", "+time=2"}, args...)...)
		if err != nil {
			t.Fatalf("dig %v: %v", args, err)
		}
		return strings.TrimSpace(out)
	}
	eventually(t, 20*time.Second, func() error {
		if got := dig(fqdn); got != svc.Spec.ClusterIP {
			return errorf("A %s = %q, want %s", fqdn, got, svc.Spec.ClusterIP)
		}
		return nil
	})
	for _, name := range []string{"web", "web." + ns} {
		if got := dig("+search", name); got != svc.Spec.ClusterIP {
			t.Errorf("A %s (search path) = %q, want %s", name, got, svc.Spec.ClusterIP)
		}
	}
	var want []string
	for _, p := range pods {
		want = append(want, p.Status.PodIP)
	}
	sort.Strings(want)
	eventually(t, 10*time.Second, func() error {
		got := strings.Fields(dig("web-headless." + ns + ".svc.cluster.local"))
		sort.Strings(got)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			return errorf("headless A = %v, want the pod IPs %v", got, want)
		}
		return nil
	})
	if got := dig("SRV", "_http._tcp."+fqdn); got != "0 100 80 "+fqdn+"." {
		t.Errorf("SRV = %q", got)
	}
	if got := dig("CNAME", "ext."+ns+".svc.cluster.local"); got != fqdn+"." {
		t.Errorf("ExternalName CNAME = %q, want %s.", got, fqdn)
	}
	if got := dig("-x", svc.Spec.ClusterIP); got != fqdn+"." {
		t.Errorf("PTR %s = %q, want %s.", svc.Spec.ClusterIP, got, fqdn)
	}
	out, _ := execIn(t, ns, from, "dig", "+tries=1", "no-such-service."+ns+".svc.cluster.local")
	if !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("unknown Service: want NXDOMAIN, got:\n%s", out)
	}
	// Tests never forward to the machine's resolver: names outside the cluster are refused.
	out, _ = execIn(t, ns, from, "dig", "+tries=1", "example.com")
	if !strings.Contains(out, "status: REFUSED") {
		t.Errorf("outside name: want REFUSED, got:\n%s", out)
	}
}
