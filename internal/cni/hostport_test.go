package cni

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestHostPortsByHostIPAndProtocol is the upstream conformance case: three pods share one
// hostPort on the same node, told apart by hostIP (loopback vs the node address) and protocol;
// a fourth on every address conflicts with them.
func TestHostPortsByHostIPAndProtocol(t *testing.T) {
	node := newNS(t, "node")
	node.mustRun(t, "ip", "link", "set", "lo", "up")
	dummy := "kt-u-" + randHex(3) // the node's "underlay" link; this kernel has no dummy links
	node.mustRun(t, "ip", "link", "add", dummy, "type", "veth", "peer", "name", dummy+"p")
	node.mustRun(t, "ip", "addr", "add", "172.31.1.2/24", "dev", dummy)
	node.mustRun(t, "ip", "link", "set", dummy, "up")
	t.Cleanup(func() { node.run("nft", "delete", "table", "inet", HostPortTable) })

	dataDir := t.TempDir()
	const hp = 18090
	pods := []struct {
		name string
		pm   PortMapping
	}{
		{"pod1", PortMapping{HostPort: hp, ContainerPort: 8080, Protocol: "tcp", HostIP: "127.0.0.1"}},
		{"pod2", PortMapping{HostPort: hp, ContainerPort: 8080, Protocol: "tcp", HostIP: "172.31.1.2"}},
		{"pod3", PortMapping{HostPort: hp, ContainerPort: 8081, Protocol: "udp", HostIP: "172.31.1.2"}},
	}
	for _, p := range pods {
		pod := newNS(t, p.name)
		conf := pluginConf(t, confOpts{cidr: "10.244.7.0/24", dataDir: dataDir, ports: []PortMapping{p.pm}})
		a := args(p.name, pod, conf)
		if _, err := add(t, node, a); err != nil {
			t.Fatalf("ADD %s (%+v): %v", p.name, p.pm, err)
		}
		t.Cleanup(func() { del(t, node, a) })
		if p.pm.Protocol == "udp" {
			udpEchoInPod(t, pod, p.pm.ContainerPort, p.name)
		} else {
			listenInPod(t, pod, p.pm.ContainerPort, p.name)
		}
	}

	if got, err := dialFromTo(node, "172.31.1.2", "127.0.0.1:18090"); err != nil || got != "pod1" {
		t.Errorf("node (source = its address) -> 127.0.0.1:%d = %q, %v; want pod1", hp, got, err)
	}
	if got, err := dialFrom(node, "127.0.0.1:18090"); err != nil || got != "pod1" {
		t.Errorf("node (source 127.0.0.1) -> 127.0.0.1:%d = %q, %v; want pod1", hp, got, err)
	}
	if got, err := dialFrom(node, "172.31.1.2:18090"); err != nil || got != "pod2" {
		t.Errorf("node -> 172.31.1.2:%d/tcp = %q, %v; want pod2", hp, got, err)
	}
	if got, err := udpFrom(node, "172.31.1.2:18090"); err != nil || got != "pod3" {
		t.Errorf("node -> 172.31.1.2:%d/udp = %q, %v; want pod3", hp, got, err)
	}

	// Every address overlaps the two TCP entries: refused, naming the holder.
	pod4 := newNS(t, "pod4")
	conf := pluginConf(t, confOpts{cidr: "10.244.7.0/24", dataDir: dataDir, ports: []PortMapping{{HostPort: hp, ContainerPort: 80, Protocol: "tcp"}}})
	if _, err := add(t, node, args("pod4", pod4, conf)); err == nil || !strings.Contains(err.Error(), "already used by container pod") {
		t.Errorf("ADD of hostPort %d/tcp on every address next to pod1/pod2: err = %v, want a conflict", hp, err)
	}
	// An IPv6 hostIP in this IPv4 network is a clear error.
	pod5 := newNS(t, "pod5")
	conf = pluginConf(t, confOpts{cidr: "10.244.7.0/24", dataDir: dataDir, ports: []PortMapping{{HostPort: 18091, ContainerPort: 80, Protocol: "tcp", HostIP: "::1"}}})
	if _, err := add(t, node, args("pod5", pod5, conf)); err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Errorf("ADD with hostIP ::1: err = %v, want an IPv4-only error", err)
	}
}

func dialFromTo(n *testNS, src, addr string) (string, error) {
	var got string
	err := n.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		k, err := c.Read(b)
		got = string(b[:k])
		return err
	})
	return got, err
}

func udpEchoInPod(t *testing.T, pod *testNS, port int, reply string) {
	t.Helper()
	var c net.PacketConn
	err := pod.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			_, from, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			c.WriteTo([]byte(reply), from)
		}
	}()
}

func udpFrom(n *testNS, addr string) (string, error) {
	var got string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.Dial("udp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		b := make([]byte, 512)
		for try := 0; try < 3; try++ {
			c.Write([]byte("hostname"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			k, err := c.Read(b)
			if err == nil {
				got = string(b[:k])
				return nil
			}
		}
		return err
	})
	return got, err
}
