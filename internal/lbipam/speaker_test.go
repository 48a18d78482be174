package lbipam

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// underlay is a bridge in its own namespace with one veth ("eth0") into
// each of the other namespaces, like knet up's underlay, without any
// default route.
type underlay struct {
	ns map[string]string // role → namespace name
}

func newUnderlay(t *testing.T, addrs map[string]string) *underlay {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	u := &underlay{ns: map[string]string{}}
	sw := "knettest-lbipam-" + sfx + "-sw"
	ipCmd(t, "netns", "add", sw)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", sw).Run() })
	ipCmd(t, "-n", sw, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", sw, "link", "set", "br0", "up")
	i := 0
	for role, cidr := range addrs {
		ns := "knettest-lbipam-" + sfx + "-" + role
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		u.ns[role] = ns
		port := "p" + string(rune('0'+i))
		i++
		ipCmd(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", sw, "link", "set", port, "master", "br0", "up")
		ipCmd(t, "-n", ns, "addr", "add", cidr, "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	}
	return u
}

func (u *underlay) path(role string) string { return "/run/netns/" + u.ns[role] }

func (u *underlay) mac(t *testing.T, role string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := inNetNS(u.path(role), func() error {
		ifc, err := net.InterfaceByName("eth0")
		if ifc != nil {
			mac = ifc.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

func readyNode(name, ip string) *v1.Node {
	n := node(name, true, nil)
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	return n
}

// arpClient sends ARP requests from the client namespace and collects
// everything that comes back.
type arpClient struct {
	conn  *packetConn
	mac   net.HardwareAddr
	ip    netip.Addr
	start time.Time
	got   chan arpSeen
}

type arpSeen struct {
	at  time.Duration
	pkt *arpPacket
}

func newARPClient(t *testing.T, u *underlay, ip string) *arpClient {
	t.Helper()
	c := &arpClient{mac: u.mac(t, "client"), ip: netip.MustParseAddr(ip), start: time.Now(), got: make(chan arpSeen, 1000)}
	if err := inNetNS(u.path("client"), func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.conn, err = openPacketConn(ifc.Index, 50*time.Millisecond)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, timeout, err := c.conn.read(buf)
			if err != nil {
				return
			}
			if !timeout {
				c.got <- arpSeen{time.Since(c.start), p}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; c.conn.close() })
	return c
}

func (c *arpClient) ask(t *testing.T, ip netip.Addr) {
	t.Helper()
	req := &arpPacket{EthDst: broadcastMAC, EthSrc: c.mac, Op: arpRequest, SenderMAC: c.mac, SenderIP: c.ip, TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
	if err := c.conn.send(req); err != nil {
		t.Fatal(err)
	}
}

// repliesWithin asks once and returns the senders of replies for ip to this
// client within d.
func (c *arpClient) repliesWithin(t *testing.T, ip netip.Addr, d time.Duration) []net.HardwareAddr {
	t.Helper()
	c.drain()
	c.ask(t, ip)
	var macs []net.HardwareAddr
	timeout := time.After(d)
	for {
		select {
		case s := <-c.got:
			if s.pkt.Op == arpReply && s.pkt.SenderIP == ip && s.pkt.TargetIP == c.ip && bytes.Equal(s.pkt.EthDst, c.mac) {
				macs = append(macs, s.pkt.SenderMAC)
			}
		case <-timeout:
			return macs
		}
	}
}

func (c *arpClient) drain() {
	for {
		select {
		case <-c.got:
		default:
			return
		}
	}
}

type runningSpeaker struct {
	s      *Speaker
	cancel context.CancelFunc
	done   chan error
}

func (r *runningSpeaker) stop(t *testing.T) {
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("speaker Run: %v", err)
	}
	r.done <- nil // later stops return at once
}

func startSpeaker(t *testing.T, client *fake.Clientset, nodeName, nsPath string) *runningSpeaker {
	t.Helper()
	s, err := NewSpeaker(SpeakerConfig{Client: client, NodeName: nodeName, NetNS: nsPath})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningSpeaker{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// TestSpeakerFailover: two node namespaces and a client on one bridge; the
// client's ARP request for the LoadBalancer address gets exactly one answer,
// from the elected node; when that node's speaker stops, the other sends a
// gratuitous ARP that moves the client's neighbour entry, and answers.
func TestSpeakerFailover(t *testing.T) {
	u := newUnderlay(t, map[string]string{"n1": "172.18.0.2/16", "n2": "172.18.0.3/16", "client": "172.18.0.100/16"})
	const lbIP = "172.18.255.200"
	ip := netip.MustParseAddr(lbIP)
	svc := lbSvc("default/web", 0, status(lbIP))
	client := fake.NewClientset(readyNode("node-1", "172.18.0.2"), readyNode("node-2", "172.18.0.3"), svc)
	macs := map[string]net.HardwareAddr{"node-1": u.mac(t, "n1"), "node-2": u.mac(t, "n2")}
	speakers := map[string]*runningSpeaker{
		"node-1": startSpeaker(t, client, "node-1", u.path("n1")),
		"node-2": startSpeaker(t, client, "node-2", u.path("n2")),
	}
	arp := newARPClient(t, u, "172.18.0.100")

	owner := ElectOwner(ip, []string{"node-1", "node-2"})
	other := map[string]string{"node-1": "node-2", "node-2": "node-1"}[owner]
	eventually(t, "an ARP answer for "+lbIP, func() bool { return len(arp.repliesWithin(t, ip, 100*time.Millisecond)) > 0 })
	for range 3 {
		got := arp.repliesWithin(t, ip, 300*time.Millisecond)
		if len(got) != 1 || !bytes.Equal(got[0], macs[owner]) {
			t.Fatalf("ARP answers %v, want exactly one from %s (%s)", got, owner, macs[owner])
		}
	}
	for name, r := range speakers {
		if o, _ := r.s.Owner(ip); o != owner {
			t.Errorf("speaker %s says owner %q, want %q", name, o, owner)
		}
	}

	// The client kernel learns the owner's MAC from a real ARP exchange.
	_ = exec.Command("ip", "netns", "exec", u.ns["client"], "ping", "-c1", "-W1", lbIP).Run()
	neigh := func() string { return ipCmd(t, "-n", u.ns["client"], "neigh", "show", lbIP) }
	if n := neigh(); !strings.Contains(n, macs[owner].String()) {
		t.Fatalf("client neighbour entry %q, want lladdr %s", n, macs[owner])
	}

	// Stop the owner's speaker, as if its node process died, and only listen:
	// the takeover must announce itself.
	arp.drain()
	stopped := time.Since(arp.start)
	speakers[owner].stop(t)
	var garpAt time.Duration
	timeout := time.After(10 * time.Second)
	for garpAt == 0 {
		select {
		case s := <-arp.got:
			p := s.pkt
			if p.SenderIP != ip {
				continue
			}
			if bytes.Equal(p.SenderMAC, macs[owner]) {
				t.Fatalf("stopped speaker %s still sent ARP for %s", owner, ip)
			}
			if p.TargetIP == ip && bytes.Equal(p.EthDst, broadcastMAC) && bytes.Equal(p.SenderMAC, macs[other]) {
				garpAt = s.at
			}
		case <-timeout:
			t.Fatalf("no gratuitous ARP from %s within 10s after %s stopped", other, owner)
		}
	}
	t.Logf("takeover gap: %v from stopping %s's speaker to %s's gratuitous ARP", garpAt-stopped, owner, other)
	eventually(t, "client neighbour entry to move to "+other, func() bool { return strings.Contains(neigh(), macs[other].String()) })

	got := arp.repliesWithin(t, ip, 300*time.Millisecond)
	if len(got) != 1 || !bytes.Equal(got[0], macs[other]) {
		t.Fatalf("after failover ARP answers %v, want exactly one from %s (%s)", got, other, macs[other])
	}
	if a := speakers[other].s.Announcing(); len(a) != 1 || a[0] != ip {
		t.Errorf("%s announces %v, want [%s]", other, a, ip)
	}
	// No kernel address was ever added: nothing to leave behind.
	for _, role := range []string{"n1", "n2"} {
		if out := ipCmd(t, "-n", u.ns[role], "addr", "show", "dev", "eth0"); strings.Contains(out, lbIP) {
			t.Errorf("%s has %s on eth0: %s", role, lbIP, out)
		}
	}
}

// TestSpeakerLocalPolicyNeedsLocalEndpoint: under externalTrafficPolicy
// Local only a node with a ready endpoint answers, whatever the hash says.
func TestSpeakerLocalPolicyNeedsLocalEndpoint(t *testing.T) {
	u := newUnderlay(t, map[string]string{"n1": "172.18.0.2/16", "n2": "172.18.0.3/16", "client": "172.18.0.100/16"})
	ip := netip.MustParseAddr("172.18.255.201")
	// Put the endpoint on the node the hash would not pick.
	endpointNode := "node-1"
	if ElectOwner(ip, []string{"node-1", "node-2"}) == "node-1" {
		endpointNode = "node-2"
	}
	svc := lbSvc("default/web", 0, status(ip.String()), local)
	sl := slice("web", map[string]bool{endpointNode: true})
	sl.Namespace = "default"
	client := fake.NewClientset(readyNode("node-1", "172.18.0.2"), readyNode("node-2", "172.18.0.3"), svc, sl)
	macs := map[string]net.HardwareAddr{"node-1": u.mac(t, "n1"), "node-2": u.mac(t, "n2")}
	startSpeaker(t, client, "node-1", u.path("n1"))
	startSpeaker(t, client, "node-2", u.path("n2"))
	arp := newARPClient(t, u, "172.18.0.100")
	eventually(t, "an ARP answer", func() bool { return len(arp.repliesWithin(t, ip, 100*time.Millisecond)) > 0 })
	got := arp.repliesWithin(t, ip, 300*time.Millisecond)
	if len(got) != 1 || !bytes.Equal(got[0], macs[endpointNode]) {
		t.Fatalf("ARP answers %v, want exactly one from %s (%s), the node with the endpoint", got, endpointNode, macs[endpointNode])
	}
}
