package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

const benchNamespace = "proxybench"

// objects creates the benchmark's API objects: Services without selectors, each with one
// hand-made EndpointSlice of endpointsPerService ready endpoints on the backend addresses.
type objects struct {
	client   kubernetes.Interface
	backends []netip.Addr
	perSvc   int

	mu         sync.Mutex
	clusterIPs map[int]string // Service index → ClusterIP
}

func (o *objects) ensureNamespace(ctx context.Context) error {
	_, err := o.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", benchNamespace, err)
	}
	return nil
}

// ensureNode creates a Node without a kubelet, with the InternalIP both proxies read.
func (o *objects) ensureNode(ctx context.Context, name string, ip netip.Addr) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}}},
	}
	_, err := o.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Node %s: %w", name, err)
	}
	// The node controllers update a kubelet-less Node too (taints), so set the address with a
	// conflict retry, and only when create did not keep it.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got, err := o.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, a := range got.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && a.Address == ip.String() {
				return nil
			}
		}
		got.Status.Addresses = node.Status.Addresses
		_, err = o.client.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("set InternalIP of Node %s: %w", name, err)
	}
	return nil
}

func serviceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// create makes Service name (ClusterIP clusterIP, "" = allocated) and its EndpointSlice, whose
// endpoints start at backend offset i, and returns the ClusterIP.
func (o *objects) create(ctx context.Context, name, clusterIP string, i int) (string, error) {
	ip, err := o.createService(ctx, name, clusterIP)
	if err != nil {
		return "", err
	}
	return ip, o.createSlice(ctx, name, i)
}

// createService makes Service name (ClusterIP clusterIP, "" = allocated) and returns its ClusterIP.
func (o *objects) createService(ctx context.Context, name, clusterIP string) (string, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP,
			Ports:     []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(backendPort)}},
		},
	}
	got, err := o.client.CoreV1().Services(benchNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create Service %s: %w", name, err)
	}
	return got.Spec.ClusterIP, nil
}

// createSlice makes the EndpointSlice of Service name, whose endpoints start at backend offset i.
func (o *objects) createSlice(ctx context.Context, name string, i int) error {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name + "-bench",
			Namespace: benchNamespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: name,
				discoveryv1.LabelManagedBy:   "proxybench",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("tcp"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(backendPort))}},
	}
	for k := 0; k < o.perSvc; k++ {
		addr := o.backends[(i*o.perSvc+k)%len(o.backends)]
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
		})
	}
	if _, err := o.client.DiscoveryV1().EndpointSlices(benchNamespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create EndpointSlice for %s: %w", name, err)
	}
	return nil
}

// bulkResult says when a bulk creation finished and which Service was completed last.
type bulkResult struct {
	first, last time.Time
	lastIndex   int
}

// createRange creates Services [from, to) with workers parallel clients.
func (o *objects) createRange(ctx context.Context, from, to, workers int) (bulkResult, error) {
	res := bulkResult{first: time.Now(), lastIndex: -1}
	idx := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				ip, err := o.create(ctx, serviceName(i), "", i)
				if err != nil {
					errs <- err
					cancel()
					return
				}
				now := time.Now()
				mu.Lock()
				o.mu.Lock()
				o.clusterIPs[i] = ip
				o.mu.Unlock()
				if now.After(res.last) {
					res.last, res.lastIndex = now, i
				}
				done++
				if done%1000 == 0 {
					logf("  %d/%d created (%.0f Services/s)", done, to-from, float64(done)/time.Since(res.first).Seconds())
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := from; i < to; i++ {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}
	return res, ctx.Err()
}

func (o *objects) clusterIP(i int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.clusterIPs[i]
}

func ptr[T any](v T) *T { return &v }
