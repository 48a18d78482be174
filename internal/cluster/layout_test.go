package cluster

import (
	"strings"
	"testing"
)

func TestNewLayoutDefault(t *testing.T) {
	l, err := NewLayout(DefaultName, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]string{
		"underlay": {l.Underlay.String(), "172.18.0.0/16"},
		"gateway":  {l.Gateway.String(), "172.18.0.1"},
		"pods":     {l.PodCIDR.String(), "10.244.0.0/16"},
		"services": {l.ServiceCIDR.String(), "10.96.0.0/12"},
		"dns":      {l.ClusterDNS.String(), "10.96.0.10"},
		"node1":    {l.Nodes[0].IP.String(), "172.18.0.2"},
		"node2":    {l.Nodes[1].IP.String(), "172.18.0.3"},
		"name1":    {l.Nodes[0].Name, "knet-node1"},
		"netns2":   {l.Nodes[1].Netns, "knet-knet-node2"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %s, want %s", what, c[0], c[1])
		}
	}
	if !l.Underlay.Contains(l.LBPool.Addr()) {
		t.Errorf("LB pool %s outside underlay %s", l.LBPool, l.Underlay)
	}
}

func TestNewLayoutIndexesDoNotOverlap(t *testing.T) {
	a, _ := NewLayout("a", 0, 3)
	b, _ := NewLayout("b", 1, 3)
	c, _ := NewLayout("c", 2, 3)
	for _, x := range []Layout{a, b, c} {
		for _, y := range []Layout{a, b, c} {
			if x.Name == y.Name {
				continue
			}
			if x.Underlay.Overlaps(y.Underlay) || x.PodCIDR.Overlaps(y.PodCIDR) || x.APIPort == y.APIPort || x.Bridge == y.Bridge {
				t.Errorf("layouts %s and %s collide: %+v %+v", x.Name, y.Name, x, y)
			}
			for _, n := range x.Nodes {
				for _, m := range y.Nodes {
					if n.HostVeth == m.HostVeth || n.Netns == m.Netns {
						t.Errorf("node names collide: %s %s", n.HostVeth, n.Netns)
					}
				}
			}
		}
	}
	for _, n := range c.Nodes {
		if len(n.HostVeth) > 15 {
			t.Errorf("link name %q longer than 15 bytes", n.HostVeth)
		}
		if !c.Underlay.Contains(n.IP) || n.IP == c.Gateway {
			t.Errorf("node IP %s not a host address of %s", n.IP, c.Underlay)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"knet", "a", "e2e-1", "abcdefghijkl"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "Knet", "a_b", "abcdefghijklm", "a/b"} {
		err := ValidateName(bad)
		if err == nil || !strings.Contains(err.Error(), "lowercase") {
			t.Errorf("ValidateName(%q) = %v, want a clear error", bad, err)
		}
	}
	if _, err := NewLayout("x", 0, 0); err == nil {
		t.Error("0 nodes accepted")
	}
}
