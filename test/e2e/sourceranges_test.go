package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// TestLoadBalancerSourceRanges: a LoadBalancer Service whose loadBalancerSourceRanges is the
// host's underlay address answers the host; narrowed to an unrelated CIDR, the host's
// connections time out (dropped, as kube-proxy does) while its NodePort still answers
// (NodePorts are not subject to the ranges); removing the field restores access.
func TestLoadBalancerSourceRanges(t *testing.T) {
	ns := testNamespace(t)
	backends(t, ns, "fw", 1)
	host := gatewayIP(nodeIPs(t)[0])
	svc := lbService("fw", 80)
	svc.Spec.LoadBalancerSourceRanges = []string{host + "/32"}
	svc = createService(t, ns, svc)
	lbIP := waitLBAddress(t, ns, "fw")
	lbURL := "http://" + lbIP + "/hostname"
	eventually(t, 20*time.Second, func() error {
		_, err := freshGet(lbURL)
		return err
	})

	setRanges := func(ranges []string) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := client.CoreV1().Services(ns).Get(context.Background(), "fw", metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Spec.LoadBalancerSourceRanges = ranges
			_, err = client.CoreV1().Services(ns).Update(context.Background(), s, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("set loadBalancerSourceRanges %v: %v", ranges, err)
		}
	}

	setRanges([]string{"192.0.2.0/24"})
	eventually(t, 20*time.Second, func() error {
		body, err := freshGet(lbURL)
		if err == nil {
			return errorf("host outside loadBalancerSourceRanges still reached %s: %q", lbIP, body)
		}
		return nil
	})
	// Not one lucky failure: every attempt now times out (dropped, not refused).
	for range 3 {
		_, err := freshGet(lbURL)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("host outside the ranges -> %s: %v, want a timeout (dropped)", lbIP, err)
		}
	}
	nodePortURL := fmt.Sprintf("http://%s:%d/hostname", nodeIPs(t)[0], svc.Spec.Ports[0].NodePort)
	if _, err := freshGet(nodePortURL); err != nil {
		t.Errorf("NodePort of the firewalled Service from the host: %v (NodePorts are not subject to loadBalancerSourceRanges)", err)
	}

	setRanges(nil)
	eventually(t, 20*time.Second, func() error {
		_, err := freshGet(lbURL)
		return err
	})
}

// freshGet is an HTTP GET on a new connection: the firewall judges new connections only, so
// a kept-alive one from an earlier request would pass whatever the ranges say.
func freshGet(url string) (string, error) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	return string(b), err
}
