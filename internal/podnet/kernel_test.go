package podnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"knet/internal/cni"
)

type testNS struct {
	ns.NetNS
	name string
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newNS(t *testing.T, role string) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root for network namespaces")
	}
	name := fmt.Sprintf("knettest-podnet-%s-%s", role, randHex(4))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	tn := &testNS{NetNS: n, name: name}
	tn.run(t, "ip", "link", "set", "lo", "up")
	return tn
}

func (n *testNS) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("[%s] %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *testNS) try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

type testNode struct {
	*testNS
	nodeName, ip, cidr string
}

type testPod struct {
	*testNS
	ip string
}

// twoNodes builds an underlay namespace with a bridge and two node namespaces
// whose eth0 sits on it, like `knet up` does on the host. A non-zero gso is
// the IPv4 GSO limit of every underlay link (knet up gives them the maximum).
func twoNodes(t *testing.T, gso int) (*testNode, *testNode) {
	ul := newNS(t, "ul")
	ul.run(t, "ip", "link", "add", "br0", "type", "bridge")
	ul.run(t, "ip", "link", "set", "br0", "up")
	mk := func(i int) *testNode {
		n := &testNode{testNS: newNS(t, fmt.Sprintf("n%d", i)), nodeName: fmt.Sprintf("node%d", i),
			ip: fmt.Sprintf("172.30.0.%d", i+1), cidr: fmt.Sprintf("10.244.%d.0/24", i)}
		port := fmt.Sprintf("ulp%d", i)
		ul.run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.name)
		ul.run(t, "ip", "link", "set", port, "master", "br0", "up")
		n.run(t, "ip", "addr", "add", n.ip+"/24", "dev", "eth0")
		n.run(t, "ip", "link", "set", "eth0", "up")
		if gso > 0 {
			ul.setGSOMaxSize(t, port, gso)
			n.setGSOMaxSize(t, "eth0", gso)
		}
		return n
	}
	n1, n2 := mk(1), mk(2)
	if gso > 0 {
		ul.setGSOMaxSize(t, "br0", gso) // refused while the bridge has no ports
	}
	return n1, n2
}

// setGSOMaxSize sets a link's IPv4 GSO limit (iproute2 before 6.3 cannot).
func (n *testNS) setGSOMaxSize(t *testing.T, dev string, size int) {
	t.Helper()
	h, l := n.link(t, dev)
	defer h.Close()
	if err := h.LinkSetGSOIPv4MaxSize(l, size); err != nil {
		t.Fatalf("[%s] gso_ipv4_max_size %d on %s: %v", n.name, size, dev, err)
	}
}

// link opens a netlink handle in the namespace (the caller closes it) and finds dev there.
func (n *testNS) link(t *testing.T, dev string) (*netlink.Handle, netlink.Link) {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName(dev)
	if err != nil {
		h.Close()
		t.Fatalf("[%s] %s: %v", n.name, dev, err)
	}
	return h, l
}

// addPod attaches a pod with knet's CNI plugin; gso is its gsoMaxSize.
func addPod(t *testing.T, n *testNode, mtu, gso int) *testPod {
	t.Helper()
	pod := newNS(t, "pod")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"knet","type":"knet","podCIDR":%q,"mtu":%d,"gsoMaxSize":%d,"dataDir":%q}`, n.cidr, mtu, gso, t.TempDir())
	p := &cni.Plugin{Logger: quiet}
	var ip string
	err := n.Do(func(ns.NetNS) error {
		res, err := p.Add(&skel.CmdArgs{ContainerID: "pod-" + randHex(4), Netns: pod.Path(), IfName: "eth0", StdinData: []byte(conf)})
		if err != nil {
			return err
		}
		ip = res.IPs[0].Address.IP.String()
		return nil
	})
	if err != nil {
		t.Fatalf("CNI ADD on %s: %v", n.nodeName, err)
	}
	return &testPod{testNS: pod, ip: ip}
}

// startControllers registers both Nodes in a fake API and runs one
// controller per node namespace.
func startControllers(t *testing.T, mode Mode, nodes ...*testNode) {
	t.Helper()
	cs := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	for _, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Create(ctx, node(n.nodeName, n.ip, n.cidr, ""), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, len(nodes))
	for _, n := range nodes {
		var c *Controller
		err := n.Do(func(ns.NetNS) error {
			var err error
			c, err = New(Config{Client: cs, NodeName: n.nodeName, Mode: mode, Link: "eth0", Logger: quiet})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- c.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range nodes {
			if err := <-done; err != nil {
				t.Errorf("controller Run: %v", err)
			}
		}
	})
}

// echoServer listens in the pod and answers each connection with the
// client's address as the server saw it (to prove there is no NAT).
func echoServer(t *testing.T, pod *testPod, port int) {
	t.Helper()
	var l net.Listener
	if err := pod.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host)
			c.Close()
		}
	}()
}

func dial(pod *testPod, addr string) (string, error) {
	var got string
	err := pod.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

func waitRoute(t *testing.T, n *testNode, dst, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := n.run(t, "ip", "route", "show", dst)
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: route to %s never became %q; have %q", n.nodeName, dst, want, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func crossNodeTraffic(t *testing.T, pa, pb *testPod) {
	t.Helper()
	if out, err := pa.try("ping", "-c", "2", "-W", "2", pb.ip); err != nil {
		t.Fatalf("ping pod %s -> pod %s across nodes: %v\n%s", pa.ip, pb.ip, err, out)
	}
	echoServer(t, pb, 7000)
	got, err := dial(pa, pb.ip+":7000")
	if err != nil {
		t.Fatalf("TCP pod %s -> pod %s across nodes: %v", pa.ip, pb.ip, err)
	}
	if got != pa.ip {
		t.Fatalf("server saw client %s, want pod IP %s (pod traffic must not be NATed)", got, pa.ip)
	}
}

func TestHostGWCrossNode(t *testing.T) {
	n1, n2 := twoNodes(t, 0)
	pa, pb := addPod(t, n1, 1500, 0), addPod(t, n2, 1500, 0)
	startControllers(t, ModeHostGW, n1, n2)
	waitRoute(t, n1, "10.244.2.0/24", "via 172.30.0.3 dev eth0 proto 75")
	waitRoute(t, n2, "10.244.1.0/24", "via 172.30.0.2 dev eth0 proto 75")
	if out := n1.run(t, "ip", "route", "show", "10.244.1.0/24", "proto", "75"); strings.TrimSpace(out) != "" {
		t.Errorf("node1 routes its own podCIDR through podnet: %s", out)
	}
	crossNodeTraffic(t, pa, pb)

	if err := n1.Do(func(ns.NetNS) error { return Cleanup("eth0") }); err != nil {
		t.Fatal(err)
	}
	if out := n1.run(t, "ip", "route", "show", "proto", "75"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after Cleanup: %s", out)
	}
}

func TestVXLANCrossNode(t *testing.T) {
	n1, n2 := twoNodes(t, 0)
	pa, pb := addPod(t, n1, 1450, 0), addPod(t, n2, 1450, 0)
	startControllers(t, ModeVXLAN, n1, n2)
	waitRoute(t, n1, "10.244.2.0/24", "via 10.244.2.0 dev knet.vxlan proto 75 onlink")
	waitRoute(t, n2, "10.244.1.0/24", "via 10.244.1.0 dev knet.vxlan proto 75 onlink")
	link := n1.run(t, "ip", "-d", "link", "show", VXLANDevice)
	for _, want := range []string{"vxlan id 1 ", "local 172.30.0.2", "dev eth0", "dstport 8472", "nolearning", "mtu 1450"} {
		if !strings.Contains(link, want) {
			t.Errorf("knet.vxlan lacks %q:\n%s", want, link)
		}
	}
	if fdb := n1.run(t, "bridge", "fdb", "show", "dev", VXLANDevice); !strings.Contains(fdb, "0e:6b:ac:1e:00:03 dst 172.30.0.3") {
		t.Errorf("node1 FDB lacks node2's VTEP:\n%s", fdb)
	}
	// No host-gw route may exist, so a working ping proves the tunnel carries it.
	if out := n1.run(t, "ip", "route", "show", "10.244.2.0/24"); strings.Contains(out, "eth0") {
		t.Fatalf("unexpected underlay route in vxlan mode: %s", out)
	}
	crossNodeTraffic(t, pa, pb)

	if err := n1.Do(func(ns.NetNS) error { return Cleanup("eth0") }); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.try("ip", "link", "show", VXLANDevice); err == nil {
		t.Error("knet.vxlan left after Cleanup")
	}
}

// rxStats reads a link's receive counters in a namespace.
func rxStats(t *testing.T, n *testNS, dev string) (bytes, packets uint64) {
	t.Helper()
	h, l := n.link(t, dev)
	defer h.Close()
	st := l.Attrs().Statistics
	return st.RxBytes, st.RxPackets
}

// bulkSend sends size bytes over TCP from pod a to a sink in pod b.
func bulkSend(t *testing.T, a, b *testPod, size int) {
	t.Helper()
	var l net.Listener
	if err := b.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", b.ip+":7100")
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
	if err := a.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", b.ip+":7100", 2*time.Second)
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
		t.Fatalf("send %d bytes pod %s -> pod %s: %v", size, a.ip, b.ip, err)
	}
	select {
	case n := <-got:
		if n != int64(size) {
			t.Fatalf("pod %s received %d bytes, want %d", b.ip, n, size)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("receiver did not finish")
	}
}

// TestHostGWCrossNodeBigTCP: with the underlay's GSO limit raised as knet up
// raises it, TCP from a node reaches a pod on the other node in units above
// 64 KiB, and so does TCP from a pod when the pods have gsoMaxSize (without
// it pods send 64 KiB units): no device on the way (pod veth, node bridge,
// node eth0, underlay bridge, the other node's bridge as the routed output
// device, pod veth) made the kernel segment them in software.
func TestHostGWCrossNodeBigTCP(t *testing.T) {
	for _, podGSO := range []int{0, cni.BigTCPGSOSize} {
		t.Run(fmt.Sprintf("gsoMaxSize=%d", podGSO), func(t *testing.T) {
			n1, n2 := twoNodes(t, cni.BigTCPGSOSize)
			pa, pb := addPod(t, n1, 1500, podGSO), addPod(t, n2, 1500, podGSO)
			startControllers(t, ModeHostGW, n1, n2)
			waitRoute(t, n1, "10.244.2.0/24", "via 172.30.0.3 dev eth0 proto 75")
			waitRoute(t, n2, "10.244.1.0/24", "via 172.30.0.2 dev eth0 proto 75")
			crossNodeTraffic(t, pa, pb)
			// From a pod, and from the node itself (hostNetwork pods, probes),
			// whose TCP sizes its units by the node's eth0 rather than a pod veth.
			for _, from := range []struct {
				*testPod
				big bool
			}{{pa, podGSO > 0}, {&testPod{testNS: n1.testNS, ip: n1.ip}, true}} {
				b0, p0 := rxStats(t, pb.testNS, "eth0")
				bulkSend(t, from.testPod, pb, 64<<20)
				b1, p1 := rxStats(t, pb.testNS, "eth0")
				avg := float64(b1-b0) / float64(p1-p0)
				t.Logf("%s -> pod %s: average packet into the pod %.0f bytes", from.ip, pb.ip, avg)
				if from.big && avg <= 65536 {
					t.Errorf("%s -> pod %s: average packet into the pod %.0f bytes, want more than 64 KiB (something on the path segments in software)", from.ip, pb.ip, avg)
				}
				if !from.big && avg > 65536 {
					t.Errorf("%s -> pod %s: average packet into the pod %.0f bytes, want at most 64 KiB without gsoMaxSize", from.ip, pb.ip, avg)
				}
			}
		})
	}
}
