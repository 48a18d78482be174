package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"sigs.k8s.io/knftables"
)

const (
	// HostPortTable is the nftables table (family inet) the plugin owns alone.
	HostPortTable = "knet-hostport"
	hostPortMap   = "hostports"
	// hostIPPortMap holds the hostPorts bound to one node address (a pod's hostIP); it is
	// consulted first, so pods may share a port on different addresses or protocols.
	hostIPPortMap = "hostip-ports"
	hostPortLock  = "hostport.lock"
)

// hostPorts programs hostPort DNAT: traffic to the node's own addresses (or to the
// one address a pod names as hostIP) on protocol/port is DNATed to
// podIP:containerPort. The rules are static; each hostPort is one element of a
// map keyed by protocol . port (any address) or hostIP . protocol . port whose
// comment is the owning container ID, so DEL and GC can find a container's
// entries without extra state. Connections from the node to its loopback
// (127.0.0.1:hostPort) work as with the portmap plugin: route_localnet on the
// pod bridge and a masquerade of the 127/8 source.
type hostPorts struct {
	nft knftables.Interface
	// bridge is the pod bridge; loopback-sourced connections leave through it.
	bridge string
	// lockPath serialises read-check-write sequences between plugin processes;
	// each nft transaction is atomic, but "is this port free?" then "add" is not.
	lockPath string
}

func newHostPorts(dataDir, bridge string) (*hostPorts, error) {
	nft, err := knftables.New(knftables.InetFamily, HostPortTable)
	if err != nil {
		return nil, fmt.Errorf("hostPort: nftables unavailable (is the nft binary installed?): %w", err)
	}
	return &hostPorts{nft: nft, bridge: bridge, lockPath: filepath.Join(dataDir, hostPortLock)}, nil
}

// hostPortsUsed reports whether any ADD with this data dir ever programmed a
// hostPort (its lock file exists). DEL skips nft entirely otherwise, which
// keeps the common pod DEL free of two nft process spawns; GC always checks.
func hostPortsUsed(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, hostPortLock))
	return err == nil
}

func (h *hostPorts) locked(fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(h.lockPath), 0o755); err != nil {
		return fmt.Errorf("hostPort: %w", err)
	}
	f, err := os.OpenFile(h.lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("hostPort: open lock: %w", err)
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("hostPort: lock: %w", err)
	}
	return fn()
}

// addBase declares the table, map and static chains. Chains are flushed and
// refilled in the same transaction so repeated ADDs never duplicate rules.
func addBase(tx *knftables.Transaction) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("knet CNI hostPorts; owned by the knet plugin")})
	tx.Add(&knftables.Map{
		Name:    hostPortMap,
		Type:    "inet_proto . inet_service : ipv4_addr . inet_service",
		Comment: knftables.PtrTo("protocol . hostPort -> podIP . containerPort; element comment = container ID"),
	})
	tx.Add(&knftables.Map{
		Name:    hostIPPortMap,
		Type:    "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
		Comment: knftables.PtrTo("hostIP . protocol . hostPort -> podIP . containerPort; element comment = container ID"),
	})
	// -101 is just before dstnat (-100), so hostPorts win over a Service
	// NodePort on the same port, as with the upstream portmap plugin. A number,
	// because nft does not accept the name "dstnat" on the output hook.
	chains := []struct{ name, hook, prio string }{{"prerouting", "prerouting", "-101"}, {"output", "output", "-101"}, {"postrouting", "postrouting", "100"}}
	for _, ch := range chains {
		tx.Add(&knftables.Chain{
			Name:     ch.name,
			Type:     knftables.PtrTo(knftables.NATType),
			Hook:     knftables.PtrTo(knftables.BaseChainHook(ch.hook)),
			Priority: knftables.PtrTo(knftables.BaseChainPriority(ch.prio)),
		})
		tx.Flush(&knftables.Chain{Name: ch.name})
	}
	// A lookup that misses makes the rule not match, so the address-specific map is
	// tried first and the any-address map second.
	for _, chain := range []string{"prerouting", "output"} {
		tx.Add(&knftables.Rule{Chain: chain, Rule: "fib daddr type local meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @" + hostIPPortMap})
		tx.Add(&knftables.Rule{Chain: chain, Rule: "fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @" + hostPortMap})
	}
	// A pod cannot answer 127.0.0.1: give node-local connections to a loopback address the
	// bridge's address as source once they were DNATed to a pod.
	tx.Add(&knftables.Rule{Chain: "postrouting", Rule: "ip saddr 127.0.0.0/8 ct status dnat masquerade"})
}

// hostPortKey is a mapping's map and key: hostIP "" (or 0.0.0.0) means every node address.
func hostPortKey(pm PortMapping) (string, []string, error) {
	port := strconv.Itoa(pm.HostPort)
	if pm.HostIP == "" || pm.HostIP == "0.0.0.0" {
		return hostPortMap, []string{pm.proto(), port}, nil
	}
	ip, err := netip.ParseAddr(pm.HostIP)
	if err != nil || !ip.Is4() {
		return "", nil, fmt.Errorf("hostPort %d: hostIP %q is not an IPv4 address; this cluster is IPv4 only", pm.HostPort, pm.HostIP)
	}
	return hostIPPortMap, []string{ip.String(), pm.proto(), port}, nil
}

// conflicts reports whether two hostPort keys claim the same traffic: same protocol and
// port, and the same address or either on every address.
func conflicts(a, b []string) bool {
	pa, pb := a[len(a)-2:], b[len(b)-2:]
	if pa[0] != pb[0] || pa[1] != pb[1] {
		return false
	}
	return len(a) == 2 || len(b) == 2 || a[0] == b[0]
}

func mapOf(key []string) string {
	if len(key) == 2 {
		return hostPortMap
	}
	return hostIPPortMap
}

func describe(key []string) string {
	if len(key) == 2 {
		return key[1] + "/" + key[0]
	}
	return key[0] + ":" + key[2] + "/" + key[1]
}

func (h *hostPorts) elements(ctx context.Context) ([]*knftables.Element, error) {
	var all []*knftables.Element
	for _, m := range []string{hostPortMap, hostIPPortMap} {
		elems, err := h.nft.ListElements(ctx, "map", m)
		if err != nil {
			if knftables.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("hostPort: list %s: %w", HostPortTable, err)
		}
		all = append(all, elems...)
	}
	return all, nil
}

// Add maps the container's hostPorts to podIP in one transaction. It fails,
// changing nothing, if another container already holds one of the ports.
func (h *hostPorts) Add(ctx context.Context, containerID string, podIP netip.Addr, pms []PortMapping) error {
	if len(pms) == 0 {
		return nil
	}
	type entry struct {
		m             string
		key           []string
		containerPort int
	}
	var want []entry
	loopback := false
	for _, pm := range pms {
		m, key, err := hostPortKey(pm)
		if err != nil {
			return err
		}
		for _, w := range want {
			if conflicts(w.key, key) {
				return fmt.Errorf("hostPort %s and %s of the same pod overlap: remove one", describe(w.key), describe(key))
			}
		}
		want = append(want, entry{m, key, pm.ContainerPort})
		loopback = loopback || m == hostPortMap || netip.MustParseAddr(key[0]).IsLoopback()
	}
	if loopback && h.bridge != "" {
		// Loopback-sourced packets may only leave through an interface with route_localnet.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+h.bridge+"/route_localnet", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("hostPort: enable route_localnet on %s: %w", h.bridge, err)
		}
	}
	return h.locked(func() error {
		existing, err := h.elements(ctx)
		if err != nil {
			return err
		}
		tx := h.nft.NewTransaction()
		addBase(tx)
		deleted := map[string]bool{}
		for _, w := range want {
			for _, e := range existing {
				if e.Comment == nil || !conflicts(e.Key, w.key) {
					continue
				}
				if *e.Comment != containerID {
					return fmt.Errorf("hostPort %s is already used by container %s on this node (as %s): choose another hostPort or hostIP, or schedule the pod elsewhere",
						describe(w.key), *e.Comment, describe(e.Key))
				}
				// Replace a repeated ADD's entry (its pod IP may differ).
				if k := describe(e.Key); !deleted[k] {
					deleted[k] = true
					tx.Delete(&knftables.Element{Map: mapOf(e.Key), Key: e.Key})
				}
			}
			tx.Add(&knftables.Element{
				Map:     w.m,
				Key:     w.key,
				Value:   []string{podIP.String(), strconv.Itoa(w.containerPort)},
				Comment: knftables.PtrTo(containerID),
			})
		}
		if err := h.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("hostPort: program %s: %w", HostPortTable, err)
		}
		return nil
	})
}

// Remove deletes the entries whose owner is not kept. keep(containerID)
// returning false removes the entry.
func (h *hostPorts) Remove(ctx context.Context, keep func(containerID string) bool) (int, error) {
	n := 0
	err := h.locked(func() error {
		existing, err := h.elements(ctx)
		if err != nil {
			return err
		}
		tx := h.nft.NewTransaction()
		for _, e := range existing {
			if e.Comment != nil && keep(*e.Comment) {
				continue
			}
			tx.Delete(&knftables.Element{Map: mapOf(e.Key), Key: e.Key})
			n++
		}
		if n == 0 {
			return nil
		}
		if err := h.nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("hostPort: remove entries from %s: %w", HostPortTable, err)
		}
		return nil
	})
	return n, err
}
