package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"knet/internal/netpol"
)

type probe struct {
	from, to string // "x/a"
	port     int
}

// netpolPods creates namespaces x, y, z (labelled ns=x...) with pods a, b, c serving TCP 80 and
// 81 (named serve-80-tcp, serve-81-tcp), as the upstream Netpol suite and Cyclonus do.
func netpolPods(t *testing.T) (map[string]*corev1.Pod, []*corev1.Namespace) {
	t.Helper()
	pods := map[string]*corev1.Pod{}
	var nss []*corev1.Namespace
	for _, short := range []string{"x", "y", "z"} {
		ns := testNamespace(t)
		n, _ := client.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
		n.Labels["ns"] = short
		n, err := client.CoreV1().Namespaces().Update(context.Background(), n, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nss = append(nss, n)
		for _, name := range []string{"a", "b", "c"} {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}}}
			for _, port := range []int32{80, 81} {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
					Name: fmt.Sprintf("c%d", port), Image: agnhost,
					Args:  []string{"netexec", fmt.Sprintf("--http-port=%d", port), "--udp-port=-1"},
					Ports: []corev1.ContainerPort{{Name: fmt.Sprintf("serve-%d-tcp", port), ContainerPort: port}},
				})
			}
			createPod(t, ns, p)
		}
	}
	for _, n := range nss {
		for _, name := range []string{"a", "b", "c"} {
			p := waitPodReady(t, n.Name, name)
			pods[n.Labels["ns"]+"/"+name] = p
		}
	}
	return pods, nss
}

// probeMatrix connects from every pod to every pod on 80 and 81 and reports which succeeded.
func probeMatrix(t *testing.T, pods map[string]*corev1.Pod) map[probe]bool {
	t.Helper()
	keys := sortedKeys(pods)
	result := map[probe]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, from := range keys {
		var script strings.Builder
		for _, to := range keys {
			for _, port := range []int{80, 81} {
				fmt.Fprintf(&script, "if /agnhost connect %s:%d --timeout=2s 2>/dev/null; then echo %s %d ok; else echo %s %d blocked; fi\n",
					pods[to].Status.PodIP, port, to, port, to, port)
			}
		}
		wg.Add(1)
		go func(from string) {
			defer wg.Done()
			p := pods[from]
			out, err := kubectl(t, "exec", "-n", p.Namespace, p.Name, "-c", "c80", "--", "sh", "-c", script.String())
			if err != nil {
				t.Errorf("probe from %s: %v", from, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var to, verdict string
				var port int
				if _, err := fmt.Sscanf(line, "%s %d %s", &to, &port, &verdict); err == nil {
					result[probe{from, to, port}] = verdict == "ok"
				}
			}
		}(from)
	}
	wg.Wait()
	return result
}

// truthTable is what the NetworkPolicy model says (checked against Cyclonus's matcher in
// internal/netpol's tests).
func truthTable(pods map[string]*corev1.Pod, nss []*corev1.Namespace, policies []*networkingv1.NetworkPolicy) map[probe]bool {
	var podList []*corev1.Pod
	for _, p := range pods {
		podList = append(podList, p)
	}
	want := map[probe]bool{}
	for from, fp := range pods {
		for to, tp := range pods {
			for _, port := range []int{80, 81} {
				v := netpol.Evaluate(policies, podList, nss, netip.MustParseAddr(fp.Status.PodIP), netip.MustParseAddr(tp.Status.PodIP), port, corev1.ProtocolTCP)
				want[probe{from, to, port}] = v.Allowed()
			}
		}
	}
	return want
}

func diffMatrix(got, want map[probe]bool) string {
	var diffs []string
	for k, w := range want {
		if k.from == k.to {
			continue // a pod reaching itself never leaves its namespace: no CNI can police it
		}
		if g, ok := got[k]; !ok || g != w {
			diffs = append(diffs, fmt.Sprintf("%s → %s:%d got allowed=%v want %v", k.from, k.to, k.port, g, w))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}

func TestNetworkPolicyProbeMatrix(t *testing.T) {
	pods, nss := netpolPods(t)
	nsOf := map[string]string{}
	for _, n := range nss {
		nsOf[n.Labels["ns"]] = n.Name
	}
	// Nothing selects anything yet: everything is allowed (retried: the first connections to
	// pods that just started can be slow on a loaded machine).
	eventually(t, 60*time.Second, func() error {
		all := probeMatrix(t, pods)
		if len(all) != 9*9*2 {
			return errorf("probe matrix has %d entries, want %d", len(all), 9*9*2)
		}
		for k, ok := range all {
			if !ok {
				return errorf("without policies %s → %s:%d is blocked", k.from, k.to, k.port)
			}
		}
		return nil
	})
	tcp := corev1.ProtocolTCP
	named80 := intstr.FromString("serve-80-tcp")
	port80 := intstr.FromInt32(80)
	policies := []*networkingv1.NetworkPolicy{
		// x/a: ingress only from pod=b in namespaces ns=y (AND in one peer), on the named port 80.
		{ObjectMeta: metav1.ObjectMeta{Name: "a-from-y-b", Namespace: nsOf["x"]}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named80}},
			}},
		}},
		// z: every pod accepts from pod=a of its own namespace OR from namespace ns=x, ports 80-81.
		{ObjectMeta: metav1.ObjectMeta{Name: "z-ingress", Namespace: nsOf["z"]}, Spec: networkingv1.NetworkPolicySpec{
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80, EndPort: ptr.To[int32](81)}},
			}},
		}},
		// y/c: egress only to the pod CIDR except x/b, on port 80.
		{ObjectMeta: metav1.ObjectMeta{Name: "c-egress", Namespace: nsOf["y"]}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "c"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: podRange(pods), Except: []string{pods["x/b"].Status.PodIP + "/32"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80}},
			}},
		}},
		// y: deny all ingress to b.
		{ObjectMeta: metav1.ObjectMeta{Name: "b-deny", Namespace: nsOf["y"]}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
		}},
	}
	for _, p := range policies {
		if _, err := client.NetworkingV1().NetworkPolicies(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := truthTable(pods, nss, policies)
	blocked := 0
	for _, ok := range want {
		if !ok {
			blocked++
		}
	}
	if blocked == 0 || blocked == len(want) {
		t.Fatalf("the truth table blocks %d of %d probes: the policies do not exercise anything", blocked, len(want))
	}
	eventually(t, 60*time.Second, func() error {
		if d := diffMatrix(probeMatrix(t, pods), want); d != "" {
			return errorf("probe matrix differs from the truth table:\n%s", d)
		}
		return nil
	})
	t.Logf("policies enforced: %d of %d probes blocked, as the truth table says", blocked, len(want))
	// Deleting the policies opens everything again.
	for _, p := range policies {
		if err := client.NetworkingV1().NetworkPolicies(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, func() error {
		for k, ok := range probeMatrix(t, pods) {
			if !ok && k.from != k.to {
				return errorf("after deleting the policies %s → %s:%d is still blocked", k.from, k.to, k.port)
			}
		}
		return nil
	})
}

// podRange is the /16 the pods' IPs are in (the cluster's pod CIDR).
func podRange(pods map[string]*corev1.Pod) string {
	for _, p := range pods {
		ip := netip.MustParseAddr(p.Status.PodIP)
		pfx, _ := ip.Prefix(16)
		return pfx.String()
	}
	return ""
}

func sortedKeys(m map[string]*corev1.Pod) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
