package lbipam

import (
	"knet/internal/netnsrun"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// SpeakerConfig configures a node's Speaker. Call Defaults, then Validate
// (NewSpeaker does both).
type SpeakerConfig struct {
	Client kubernetes.Interface
	// NodeName is this node's Node object name.
	NodeName string
	// Interface is the underlay link ARP is answered on. Default eth0.
	Interface string
	// HeartbeatPort is the UDP port speakers exchange heartbeats on, on the
	// Nodes' InternalIPs. Default 7946 (MetalLB's memberlist port).
	HeartbeatPort int
	// HeartbeatInterval is how often a heartbeat goes to every other node.
	// Default 100ms.
	HeartbeatInterval time.Duration
	// MissedHeartbeats is how many intervals of silence make a node dead.
	// Default 3, so an owner that stops is replaced in 3-4 intervals.
	MissedHeartbeats int
	// NetNS is the path of the network namespace (e.g. /run/netns/x) whose
	// Interface the speaker serves. Empty: the namespace of the thread that
	// calls Run (knet node runs inside its node's namespace).
	NetNS  string
	Logger *slog.Logger
}

// Defaults fills unset optional fields.
func (c *SpeakerConfig) Defaults() {
	if c.Interface == "" {
		c.Interface = "eth0"
	}
	if c.HeartbeatPort == 0 {
		c.HeartbeatPort = 7946
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 100 * time.Millisecond
	}
	if c.MissedHeartbeats == 0 {
		c.MissedHeartbeats = 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem with the configuration at once.
func (c *SpeakerConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("lbipam speaker: Client is required"))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("lbipam speaker: NodeName is required (this node's Node object name)"))
	}
	if c.HeartbeatPort <= 0 || c.HeartbeatPort > 65535 {
		errs = append(errs, fmt.Errorf("lbipam speaker: HeartbeatPort %d is not a UDP port", c.HeartbeatPort))
	}
	if c.HeartbeatInterval <= 0 || c.MissedHeartbeats <= 0 {
		errs = append(errs, errors.New("lbipam speaker: HeartbeatInterval and MissedHeartbeats must be positive (call Defaults first)"))
	}
	return errors.Join(errs...)
}

// heartbeatMagic starts every heartbeat datagram; the node name follows.
const heartbeatMagic = "knet-lb/1 "

// garpRepeats is how many times a gratuitous ARP burst is sent after a
// takeover, one per heartbeat interval, in case the first is lost.
const garpRepeats = 3

// Speaker answers ARP for the LoadBalancer addresses this node owns.
type Speaker struct {
	cfg      SpeakerConfig
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	nodes    corelisters.NodeLister
	dirty    chan struct{}

	mu       sync.Mutex
	lastSeen map[string]time.Time

	// owners is the latest decision for every address (all nodes);
	// announcing is the subset this node answers for right now.
	owners     atomic.Pointer[map[netip.Addr]string]
	announcing atomic.Pointer[map[netip.Addr]bool]
	// alive is the membership of the previous decision (decide's goroutine only).
	alive map[string]bool
}

// NewSpeaker validates cfg (after Defaults) and builds a Speaker. It
// touches nothing until Run.
func NewSpeaker(cfg SpeakerConfig) (*Speaker, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Speaker{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "lbipam-speaker", "node", cfg.NodeName),
		factory:  informers.NewSharedInformerFactory(cfg.Client, 0),
		dirty:    make(chan struct{}, 1),
		lastSeen: map[string]time.Time{},
	}
	empty, none := map[netip.Addr]string{}, map[netip.Addr]bool{}
	s.owners.Store(&empty)
	s.announcing.Store(&none)
	mark := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.markDirty() },
		UpdateFunc: func(any, any) { s.markDirty() },
		DeleteFunc: func(any) { s.markDirty() },
	}
	si := s.factory.Core().V1().Services()
	ei := s.factory.Discovery().V1().EndpointSlices()
	ni := s.factory.Core().V1().Nodes()
	for what, inf := range map[string]cache.SharedIndexInformer{"Services": si.Informer(), "EndpointSlices": ei.Informer(), "Nodes": ni.Informer()} {
		if _, err := inf.AddEventHandler(mark); err != nil {
			return nil, fmt.Errorf("lbipam speaker: watch %s: %w", what, err)
		}
	}
	s.services, s.slices, s.nodes = si.Lister(), ei.Lister(), ni.Lister()
	return s, nil
}

func (s *Speaker) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Owner returns the node that announces ip according to this speaker's
// latest decision, for a proxy that wants to know.
func (s *Speaker) Owner(ip netip.Addr) (node string, ok bool) {
	node, ok = (*s.owners.Load())[ip]
	return node, ok
}

// Announcing returns the addresses this node answers ARP for, sorted.
func (s *Speaker) Announcing() []netip.Addr {
	out := slices.Collect(maps.Keys(*s.announcing.Load()))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// sockets are the speaker's two sockets, opened in the node's namespace.
type sockets struct {
	arp *packetConn
	mac net.HardwareAddr
	hb  *net.UDPConn
}

func (s *Speaker) open() (*sockets, error) {
	var socks sockets
	err := inNetNS(s.cfg.NetNS, func() error {
		ifc, err := net.InterfaceByName(s.cfg.Interface)
		if err != nil {
			return fmt.Errorf("underlay interface %q (set SpeakerConfig.Interface): %w", s.cfg.Interface, err)
		}
		if len(ifc.HardwareAddr) != 6 {
			return fmt.Errorf("interface %s has no Ethernet address; ARP needs one", ifc.Name)
		}
		socks.mac = ifc.HardwareAddr
		// Short read timeout: the reader checks for shutdown between reads.
		if socks.arp, err = openPacketConn(ifc.Index, 200*time.Millisecond); err != nil {
			return err
		}
		socks.hb, err = net.ListenUDP("udp4", &net.UDPAddr{Port: s.cfg.HeartbeatPort})
		if err != nil {
			socks.arp.close()
			return fmt.Errorf("listen for heartbeats on UDP %d (another speaker on this node?): %w", s.cfg.HeartbeatPort, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lbipam speaker: %w", err)
	}
	return &socks, nil
}

// inNetNS runs fn on a thread switched into the namespace at path ("":
// the current one). Sockets fn opens stay in that namespace.
func inNetNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	if err := netnsrun.Run(target, fn); err != nil {
		return fmt.Errorf("in network namespace %s: %w", path, err)
	}
	return nil
}

// Run opens the sockets, then answers ARP and exchanges heartbeats until
// ctx ends. Everything it made dies with it: two sockets, no kernel state.
func (s *Speaker) Run(ctx context.Context) error {
	socks, err := s.open()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		socks.hb.Close() // unblocks the heartbeat reader
		wg.Wait()
		socks.arp.close()
	}()

	s.factory.Start(ctx.Done())
	defer s.factory.Shutdown()
	for typ, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("lbipam speaker: %v cache did not sync (is the API server reachable?): %w", typ, context.Cause(ctx))
		}
	}
	s.log.Info("speaker running", "interface", s.cfg.Interface, "mac", socks.mac.String(), "heartbeatPort", s.cfg.HeartbeatPort)

	wg.Add(2)
	go func() { defer wg.Done(); s.answerARP(ctx, socks) }()
	go func() { defer wg.Done(); s.receiveHeartbeats(socks.hb) }()

	// Announce nothing until peers had time to be heard, or a restarting
	// node would briefly claim every address.
	grace := time.Now().Add(time.Duration(s.cfg.MissedHeartbeats) * s.cfg.HeartbeatInterval)
	tick := time.NewTicker(s.cfg.HeartbeatInterval)
	defer tick.Stop()
	garp := map[netip.Addr]int{} // address → gratuitous bursts still to send
	for {
		s.sendHeartbeats(socks.hb)
		if err := s.decide(time.Now().After(grace), socks, garp); err != nil {
			s.log.Error("cannot decide owners; keeping the previous decision", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.dirty:
		}
	}
}

// gained reports whether now has a member before lacked.
func gained(before, now map[string]bool) bool {
	for n := range now {
		if !before[n] {
			return true
		}
	}
	return false
}

// decide recomputes the owners and sends gratuitous ARPs for addresses this
// node gained (and repeats for recent ones).
func (s *Speaker) decide(announce bool, socks *sockets, garp map[netip.Addr]int) error {
	in, err := s.inputs(time.Now())
	if err != nil {
		return err
	}
	own := owners(in)
	mine := map[netip.Addr]bool{}
	if announce {
		for ip, n := range own {
			if n == s.cfg.NodeName {
				mine[ip] = true
			}
		}
	}
	prev := *s.announcing.Load()
	s.owners.Store(&own)
	s.announcing.Store(&mine)
	// A peer that comes back may have announced our addresses while we looked dead to it
	// (and the neighbours followed it); re-announce them all so they come back to us.
	rejoined := s.alive != nil && gained(s.alive, in.Alive)
	s.alive = in.Alive
	for ip := range mine {
		if !prev[ip] || rejoined {
			if !prev[ip] {
				s.log.Info("announcing LoadBalancer address", "ip", ip)
			}
			garp[ip] = garpRepeats
		}
	}
	for ip := range prev {
		if !mine[ip] {
			s.log.Info("no longer announcing LoadBalancer address", "ip", ip, "owner", own[ip])
			delete(garp, ip)
		}
	}
	for ip, left := range garp {
		for _, p := range gratuitous(ip, socks.mac) {
			if err := socks.arp.send(p); err != nil {
				s.log.Warn("gratuitous ARP failed", "ip", ip, "err", err)
			}
		}
		if left <= 1 {
			delete(garp, ip)
		} else {
			garp[ip] = left - 1
		}
	}
	return nil
}

func (s *Speaker) inputs(now time.Time) (announceInputs, error) {
	svcs, err := s.services.List(labels.Everything())
	if err != nil {
		return announceInputs{}, fmt.Errorf("list Services: %w", err)
	}
	eps, err := s.slices.List(labels.Everything())
	if err != nil {
		return announceInputs{}, fmt.Errorf("list EndpointSlices: %w", err)
	}
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return announceInputs{}, fmt.Errorf("list Nodes: %w", err)
	}
	alive := map[string]bool{s.cfg.NodeName: true}
	deadline := time.Duration(s.cfg.MissedHeartbeats) * s.cfg.HeartbeatInterval
	s.mu.Lock()
	for n, t := range s.lastSeen {
		if now.Sub(t) <= deadline {
			alive[n] = true
		}
	}
	s.mu.Unlock()
	return announceInputs{Services: svcs, EndpointSlices: eps, Nodes: nodes, Alive: alive}, nil
}

// internalIP is a Node's first IPv4 InternalIP.
func internalIP(n *v1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func (s *Speaker) sendHeartbeats(conn *net.UDPConn) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	msg := []byte(heartbeatMagic + s.cfg.NodeName)
	for _, n := range nodes {
		ip, ok := internalIP(n)
		if n.Name == s.cfg.NodeName || !ok {
			continue
		}
		// Errors (no route, peer's port closed) are what a dead peer looks
		// like; its silence is detected on the receiving side.
		_, _ = conn.WriteToUDPAddrPort(msg, netip.AddrPortFrom(ip, uint16(s.cfg.HeartbeatPort)))
	}
}

// receiveHeartbeats records when each peer was last heard, until conn is
// closed. A heartbeat counts only from the InternalIP of the Node it names.
func (s *Speaker) receiveHeartbeats(conn *net.UDPConn) {
	buf := make([]byte, 512)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		name, ok := strings.CutPrefix(string(buf[:n]), heartbeatMagic)
		if !ok || name == s.cfg.NodeName {
			continue
		}
		node, err := s.nodes.Get(name)
		if err != nil {
			continue
		}
		if ip, ok := internalIP(node); !ok || ip != from.Addr().Unmap() {
			continue
		}
		s.mu.Lock()
		last, known := s.lastSeen[name]
		s.lastSeen[name] = time.Now()
		s.mu.Unlock()
		if !known || time.Since(last) > time.Duration(s.cfg.MissedHeartbeats)*s.cfg.HeartbeatInterval {
			s.log.Info("peer speaker alive", "peer", name)
			s.markDirty()
		}
	}
}

// answerARP replies to ARP requests for addresses this node announces.
func (s *Speaker) answerARP(ctx context.Context, socks *sockets) {
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		req, timeout, err := socks.arp.read(buf)
		if timeout {
			continue
		}
		if err != nil {
			s.log.Error("ARP socket failed; addresses are not answered until restart", "err", err)
			return
		}
		// A gratuitous request (sender = target) is an announcement, not a question.
		if req.Op != arpRequest || req.SenderIP == req.TargetIP || !(*s.announcing.Load())[req.TargetIP] {
			continue
		}
		if err := socks.arp.send(replyTo(req, socks.mac)); err != nil {
			s.log.Warn("ARP reply failed", "ip", req.TargetIP, "to", req.SenderIP, "err", err)
		}
	}
}
