package kubelet

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
)

func TestCNIReadyFollowsConflist(t *testing.T) {
	dir := t.TempDir()
	n := newCNINetwork(dir, "/nonexistent", t.TempDir())
	if n.Ready() {
		t.Fatal("ready without a conflist")
	}
	// A .conf (not a list) does not count, as in containerd's CRI plugin setup.
	os.WriteFile(filepath.Join(dir, "10-x.conf"), []byte(`{"cniVersion":"1.0.0","name":"x","type":"bridge"}`), 0o644)
	if n.Ready() {
		t.Fatal("ready with only a .conf")
	}
	os.WriteFile(filepath.Join(dir, "10-knet.conflist"), []byte(`{"cniVersion":"1.0.0","name":"knet","plugins":[{"type":"knet"}]}`), 0o644)
	if !n.Ready() {
		t.Fatal("not ready with a conflist")
	}
	list, err := n.confList()
	if err != nil || list.Name != "knet" {
		t.Fatalf("confList = %v, %v", list, err)
	}
}

func TestCNIRuntimeConf(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
		{ContainerPort: 80, HostPort: 8080},
		{ContainerPort: 53, HostPort: 5353, Protocol: corev1.ProtocolUDP, HostIP: "172.18.0.2"},
		{ContainerPort: 9090},
	}}}}}
	a := cniAttachment{ContainerID: "abc", NetNS: "/proc/1/ns/net", Namespace: "ns", Name: "p", UID: "u-1", PortMappings: hostPortMappings(pod)}
	rt := a.runtimeConf()
	if rt.IfName != "eth0" || rt.ContainerID != "abc" || rt.NetNS != "/proc/1/ns/net" {
		t.Errorf("runtime conf = %+v", rt)
	}
	wantArgs := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "ns"}, {"K8S_POD_NAME", "p"}, {"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u-1"}}
	if !reflect.DeepEqual(rt.Args, wantArgs) {
		t.Errorf("args = %v", rt.Args)
	}
	pm := rt.CapabilityArgs["portMappings"].([]portMapping)
	want := []portMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "172.18.0.2"}}
	if !reflect.DeepEqual(pm, want) {
		t.Errorf("portMappings = %+v, want %+v", pm, want)
	}
	if (cniAttachment{}).runtimeConf().CapabilityArgs != nil {
		t.Error("portMappings capability sent without host ports")
	}
}

func TestResultIPs(t *testing.T) {
	ip := func(s string) net.IPNet {
		i, n, _ := net.ParseCIDR(s)
		n.IP = i
		return *n
	}
	res := &current.Result{CNIVersion: "1.0.0", IPs: []*current.IPConfig{{Address: ip("fd00::5/64")}, {Address: ip("10.244.1.5/24")}}}
	got, err := resultIPs(res)
	if err != nil || !reflect.DeepEqual(got, []string{"10.244.1.5", "fd00::5"}) {
		t.Errorf("resultIPs = %v, %v; want IPv4 first", got, err)
	}
	if _, err := resultIPs(&current.Result{CNIVersion: "1.0.0"}); err == nil {
		t.Error("a result without IPs was accepted")
	}
}
