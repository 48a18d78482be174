package cni

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// linkIn reads a link's attributes in a namespace.
func linkIn(t *testing.T, n *testNS, name string) *netlink.LinkAttrs {
	t.Helper()
	var attrs *netlink.LinkAttrs
	if err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		attrs = l.Attrs()
		return nil
	}); err != nil {
		t.Fatalf("link %s in %s: %v", name, n.name, err)
	}
	return attrs
}

// sendBulk sends size bytes over TCP from a namespace to a sink in the pod and
// returns the average size of the packets the pod's eth0 received (a veth
// counts one packet per GSO unit, so units split on the way show as ~1.5 KB).
func sendBulk(t *testing.T, from, to *testNS, toIP string, size int) float64 {
	t.Helper()
	var l net.Listener
	if err := to.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", toIP+":9100")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	before := linkIn(t, to, "eth0").Statistics
	if err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", toIP+":9100", 2*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 1<<20)
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				c.Close()
				return err
			}
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("send %d bytes to %s: %v", size, toIP, err)
	}
	select {
	case n := <-got:
		if n != int64(size) {
			t.Fatalf("receiver got %d bytes, want %d", n, size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("receiver did not finish")
	}
	after := linkIn(t, to, "eth0").Statistics
	return float64(after.RxBytes-before.RxBytes) / float64(after.RxPackets-before.RxPackets)
}

// TestGSOMaxSizeSendsBigPacketsBetweenPods: with gsoMaxSize the pod ends of
// the veths carry the limit and TCP between two pods on the bridge arrives in
// units larger than the kernel's default 64 KiB; without it (the control)
// pods send at most 64 KiB. Either way the node's side (bridge, host ends)
// takes BigTCPGSOSize, so the node's own TCP reaches a pod in big units.
func TestGSOMaxSizeSendsBigPacketsBetweenPods(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		name   string
		gso    int
		podGSO uint32
	}{
		{name: "default", gso: 0, podGSO: 65536},
		{name: "big", gso: BigTCPGSOSize, podGSO: BigTCPGSOSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := newNS(t, "node")
			extra := map[string]any{}
			if tc.gso != 0 {
				extra["gsoMaxSize"] = tc.gso
			}
			conf := pluginConf(t, confOpts{cidr: "10.244.11.0/24", dataDir: t.TempDir(), extra: extra})
			podA, podB := newNS(t, "pa"), newNS(t, "pb")
			if _, err := add(t, node, args("pod-a", podA, conf)); err != nil {
				t.Fatal(err)
			}
			rb, err := add(t, node, args("pod-b", podB, conf))
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range []struct {
				n    *testNS
				name string
				want uint32
			}{
				{podA, "eth0", tc.podGSO}, {podB, "eth0", tc.podGSO},
				{node, hostVethName("pod-a", "eth0"), BigTCPGSOSize}, {node, hostVethName("pod-b", "eth0"), BigTCPGSOSize},
				{node, "knet0", BigTCPGSOSize},
			} {
				if got := linkIn(t, l.n, l.name).GSOIPv4MaxSize; got != l.want {
					t.Errorf("%s in %s: gso_ipv4_max_size %d, want %d", l.name, l.n.name, got, l.want)
				}
			}
			ipB := rb.IPs[0].Address.IP.String()
			avg := sendBulk(t, podA, podB, ipB, size)
			t.Logf("pod A -> pod B: average packet %.0f bytes", avg)
			if tc.gso != 0 && avg <= 65536 {
				t.Errorf("pod A -> pod B: average packet %.0f bytes with gsoMaxSize %d, want more than 64 KiB", avg, tc.gso)
			}
			if tc.gso == 0 && avg > 65536 {
				t.Errorf("pod A -> pod B: average packet %.0f bytes without gsoMaxSize, want at most 64 KiB", avg)
			}
			avg = sendBulk(t, node, podB, ipB, size)
			t.Logf("node -> pod B: average packet %.0f bytes", avg)
			if avg <= 65536 {
				t.Errorf("node -> pod B: average packet %.0f bytes, want more than 64 KiB", avg)
			}
		})
	}
}

func TestGSOMaxSizeOutOfRangeIsAConfigError(t *testing.T) {
	for _, v := range []int{1500, 65535, MaxGSOSize + 1} {
		c := &NetConf{PodCIDR: "10.244.0.0/24", GSOMaxSize: v}
		c.Defaults()
		if err := c.Validate(); err == nil {
			t.Errorf("gsoMaxSize %d accepted", v)
		}
	}
	for _, v := range []int{0, 65536, BigTCPGSOSize, MaxGSOSize} {
		c := &NetConf{PodCIDR: "10.244.0.0/24", GSOMaxSize: v}
		c.Defaults()
		if err := c.Validate(); err != nil {
			t.Errorf("gsoMaxSize %d: %v", v, err)
		}
	}
	b, err := ConfList(NetConf{PodCIDR: "10.244.0.0/24", GSOMaxSize: BigTCPGSOSize})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"gsoMaxSize": %d`, BigTCPGSOSize); !strings.Contains(string(b), want) {
		t.Errorf("conflist lacks %s:\n%s", want, b)
	}
}
