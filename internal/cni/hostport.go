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
	hostPortLock  = "hostport.lock"
)

// hostPorts programs hostPort DNAT: traffic to any of the node's own addresses
// on protocol/port is DNATed to podIP:containerPort. The rules are static; each
// hostPort is one element of a verdict-free map keyed by protocol . port whose
// comment is the owning container ID, so DEL and GC can find a container's
// entries without extra state.
type hostPorts struct {
	nft knftables.Interface
	// lockPath serialises read-check-write sequences between plugin processes;
	// each nft transaction is atomic, but "is this port free?" then "add" is not.
	lockPath string
}

func newHostPorts(dataDir string) (*hostPorts, error) {
	nft, err := knftables.New(knftables.InetFamily, HostPortTable)
	if err != nil {
		return nil, fmt.Errorf("hostPort: nftables unavailable (is the nft binary installed?): %w", err)
	}
	return &hostPorts{nft: nft, lockPath: filepath.Join(dataDir, hostPortLock)}, nil
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
	// -101 is just before dstnat (-100), so hostPorts win over a Service
	// NodePort on the same port, as with the upstream portmap plugin. A number,
	// because nft does not accept the name "dstnat" on the output hook.
	for _, ch := range []struct{ name, hook string }{{"prerouting", "prerouting"}, {"output", "output"}} {
		tx.Add(&knftables.Chain{
			Name:     ch.name,
			Type:     knftables.PtrTo(knftables.NATType),
			Hook:     knftables.PtrTo(knftables.BaseChainHook(ch.hook)),
			Priority: knftables.PtrTo(knftables.BaseChainPriority("-101")),
		})
		tx.Flush(&knftables.Chain{Name: ch.name})
	}
	rule := "fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @" + hostPortMap
	tx.Add(&knftables.Rule{Chain: "prerouting", Rule: rule})
	// Locally generated traffic to 127.0.0.0/8 would need route_localnet and
	// masquerade to reach a pod; leave loopback alone.
	tx.Add(&knftables.Rule{Chain: "output", Rule: "ip daddr != 127.0.0.0/8 " + rule})
}

func (h *hostPorts) elements(ctx context.Context) ([]*knftables.Element, error) {
	elems, err := h.nft.ListElements(ctx, "map", hostPortMap)
	if err != nil {
		if knftables.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("hostPort: list %s: %w", HostPortTable, err)
	}
	return elems, nil
}

// Add maps the container's hostPorts to podIP in one transaction. It fails,
// changing nothing, if another container already holds one of the ports.
func (h *hostPorts) Add(ctx context.Context, containerID string, podIP netip.Addr, pms []PortMapping) error {
	if len(pms) == 0 {
		return nil
	}
	return h.locked(func() error {
		existing, err := h.elements(ctx)
		if err != nil {
			return err
		}
		owner := map[string]string{}
		for _, e := range existing {
			if len(e.Key) == 2 && e.Comment != nil {
				owner[e.Key[0]+"/"+e.Key[1]] = *e.Comment
			}
		}
		tx := h.nft.NewTransaction()
		addBase(tx)
		for _, pm := range pms {
			key := []string{pm.proto(), strconv.Itoa(pm.HostPort)}
			if o, ok := owner[key[0]+"/"+key[1]]; ok && o != containerID {
				return fmt.Errorf("hostPort %d/%s is already used by container %s on this node: choose another hostPort or schedule the pod elsewhere",
					pm.HostPort, pm.proto(), o)
			}
			e := &knftables.Element{
				Map:     hostPortMap,
				Key:     key,
				Value:   []string{podIP.String(), strconv.Itoa(pm.ContainerPort)},
				Comment: knftables.PtrTo(containerID),
			}
			// Replace a repeated ADD's entry (its pod IP may differ).
			if _, ok := owner[key[0]+"/"+key[1]]; ok {
				tx.Delete(&knftables.Element{Map: hostPortMap, Key: key})
			}
			tx.Add(e)
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
			tx.Delete(&knftables.Element{Map: hostPortMap, Key: e.Key})
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
