package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	benchNamespace = "npbench"
	agnhost        = "registry.k8s.io/e2e-test-images/agnhost:2.56"
	serverPort     = 8080
	otherApps      = 6 // distinct app labels of the pods the bulk policies select
	bulkLabel      = "npbench/bulk"
	denyPolicy     = "npb-deny"
	allowPolicy    = "npb-allow-client"
)

func ensureNamespace(ctx context.Context, c kubernetes.Interface) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace, Labels: map[string]string{"team": "bench"}}}
	_, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s exists already: a previous run did not finish; `bin/knet down --name CLUSTER` and start again", benchNamespace)
	}
	return err
}

// agnhostPod runs agnhost with args on node; the server gets a readiness probe so Ready means
// it accepts connections.
func agnhostPod(name, node, app string, args ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers:                    []corev1.Container{{Name: "c", Image: agnhost, Args: args}},
		},
	}
	if args[0] == "netexec" {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: serverPort}}
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(serverPort)}},
			PeriodSeconds: 1,
		}
	}
	return p
}

// createPods creates the pods and waits until all are Ready; it returns them with status.
func createPods(ctx context.Context, c kubernetes.Interface, pods []*corev1.Pod, timeout time.Duration) (map[string]*corev1.Pod, error) {
	for _, p := range pods {
		if _, err := c.CoreV1().Pods(benchNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create pod %s: %w", p.Name, err)
		}
	}
	deadline := time.Now().Add(timeout)
	out := map[string]*corev1.Pod{}
	for _, want := range pods {
		for {
			p, err := c.CoreV1().Pods(benchNamespace).Get(ctx, want.Name, metav1.GetOptions{})
			if err == nil && podReady(p) && p.Status.PodIP != "" {
				out[p.Name] = p
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("pod %s not Ready within %v (last error %v); see the node log under /var/lib/knet/CLUSTER/logs", want.Name, timeout, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// denyServer isolates the server for ingress without allowing anything.
func denyServer() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: denyPolicy, Namespace: benchNamespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "npb-server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// allowClient isolates the server and admits the client on the server port.
func allowClient() *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: allowPolicy, Namespace: benchNamespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "npb-server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "npb-client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(serverPort))}},
			}},
		},
	}
}

// bulkPolicy i selects one of the "other" apps (never the server or the client) and admits a
// mix of peers: another app, a namespace+pod selector, and an ipBlock of its own, so every
// policy adds distinct set elements on the nodes where its pods run; every fourth one also
// restricts egress.
func bulkPolicy(i int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	app := func(k int) map[string]string { return map[string]string{"app": fmt.Sprintf("other-%d", k%otherApps)} }
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bulk-%04d", i), Namespace: benchNamespace, Labels: map[string]string{bulkLabel: "true"}},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: app(i)},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{
					From: []networkingv1.NetworkPolicyPeer{
						{PodSelector: &metav1.LabelSelector{MatchLabels: app(i + 1)}},
						{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("10.200.%d.%d/32", i/250, i%250)}},
					},
					Ports: []networkingv1.NetworkPolicyPort{
						{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(80))},
						{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(int32(8000 + i%100)))},
					},
				},
				{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: app(i + 2)},
				}}},
			},
		},
	}
	if i%4 == 0 {
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("10.201.%d.%d/32", i/250, i%250)}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: ptr.To(intstr.FromInt32(53))}},
		}}
	}
	return np
}

// createBulk creates bulk policies 0..n-1 with workers parallel clients.
func createBulk(ctx context.Context, c kubernetes.Interface, n, workers int) error {
	next := make(chan int)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := c.NetworkingV1().NetworkPolicies(benchNamespace).Create(ctx, bulkPolicy(i), metav1.CreateOptions{}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("create policy bulk-%04d: %w", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func deleteBulk(ctx context.Context, c kubernetes.Interface) error {
	return c.NetworkingV1().NetworkPolicies(benchNamespace).DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: bulkLabel + "=true"})
}
