package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"knet/internal/ipam"
)

// supportedVersions are the CNI spec versions the plugin accepts (VERSION reports them).
var supportedVersions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// PluginMain runs the plugin as a CNI binary: it reads CNI_* from the
// environment and the config from stdin, writes the result (or a CNI error)
// to stdout, and exits. Logs go to stderr.
func PluginMain() {
	p := &Plugin{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    p.cmdAdd,
		Del:    p.Del,
		Check:  p.Check,
		GC:     p.GC,
		Status: p.Status,
	}, supportedVersions, "knet CNI plugin (bridge + host-local style IPAM + hostPort)")
}

// Plugin implements the CNI operations. Each method runs in the calling
// thread's network namespace, which must be the node's (the runtime starts
// the plugin binary there). Callers embedding it in-process must lock the OS
// thread in that namespace (e.g. ns.NetNS.Do).
type Plugin struct {
	Logger *slog.Logger
}

func (p *Plugin) log() *slog.Logger {
	if p.Logger == nil {
		return slog.Default()
	}
	return p.Logger
}

func (p *Plugin) cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	res, err := p.Add(args)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func (p *Plugin) openStore(conf *NetConf) (*ipam.Store, netip.Prefix, error) {
	cidr, err := conf.podCIDR()
	if err != nil {
		return nil, netip.Prefix{}, err
	}
	store, err := ipam.Open(ipam.Config{Dir: conf.DataDir, Subnet: cidr, Logger: p.log()})
	if err != nil {
		return nil, netip.Prefix{}, types.NewError(types.ErrIOFailure, "knet: cannot open IPAM state", err.Error())
	}
	return store, cidr, nil
}

// Add connects the pod's namespace to the node bridge and returns a 1.1.0
// result. On any failure everything it created is removed again.
//
// It talks netlink through one socket per namespace and never switches the
// thread into the pod's namespace: the veth is created in the node with its
// peer placed straight into the pod, already enslaved to the bridge and up.
func (p *Plugin) Add(args *skel.CmdArgs) (_ *current.Result, retErr error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, err
	}
	store, cidr, err := p.openStore(conf)
	if err != nil {
		return nil, err
	}
	node, err := nodeHandle()
	if err != nil {
		return nil, err
	}
	defer node.Close()
	gw := store.Gateway()
	br, err := ensureBridge(node, conf.Bridge, netip.PrefixFrom(gw, cidr.Bits()), conf.MTU)
	if err != nil {
		return nil, err
	}
	if err := ensureSysctls(); err != nil {
		return nil, err
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("knet: cannot open pod netns %q", args.Netns), err.Error())
	}
	defer podNS.Close()
	pod, err := podHandle(podNS)
	if err != nil {
		return nil, err
	}
	defer pod.Close()

	att := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	success := false
	podIP, err := store.Allocate(att)
	if err != nil {
		var ex *ipam.ExhaustedError
		if errors.As(err, &ex) {
			// Code 999, not 11: retrying cannot help until pods are deleted.
			return nil, types.NewError(types.ErrInternal, err.Error(), "")
		}
		return nil, types.NewError(types.ErrIOFailure, "knet: IP allocation failed", err.Error())
	}
	defer func() {
		if !success {
			if _, err := store.Release(att); err != nil {
				p.log().Warn("rollback: release IP", "container", args.ContainerID, "ip", podIP, "err", err)
			}
		}
	}()

	hostName := hostVethName(args.ContainerID, args.IfName)
	// A stale host veth from a lost DEL would block the name, and a repeated
	// ADD replaces the pod interface instead of failing on it.
	if err := delLinkIfExists(node, hostName); err != nil {
		return nil, err
	}
	if err := delLinkIfExists(pod, args.IfName); err != nil {
		return nil, fmt.Errorf("in pod netns: %w", err)
	}
	defer func() {
		if !success {
			// Deleting either end removes the whole pair.
			if err := delLinkIfExists(pod, args.IfName); err != nil {
				p.log().Warn("rollback: delete pod interface", "container", args.ContainerID, "err", err)
			}
			_ = delLinkIfExists(node, hostName)
		}
	}()
	hostVeth, podVeth, err := createVeth(node, pod, vethSpec{
		host: hostName, pod: args.IfName, podNS: podNS, mtu: conf.MTU, hostGSO: nodeGSOMaxSize(conf.GSOMaxSize), bridge: br, hairpin: conf.hairpin(),
	})
	if err != nil {
		return nil, err
	}
	if err := configurePod(pod, podVeth, netip.PrefixFrom(podIP, cidr.Bits()), gw); err != nil {
		return nil, err
	}
	// A performance setting never fails a pod (see raiseGSOLimits).
	if err := raiseGSOLimits(node, pod, br, podVeth, conf.GSOMaxSize); err != nil {
		p.log().Warn("GSO limit not raised: pod traffic keeps 64 KiB units on this node", "container", args.ContainerID, "gsoMaxSize", conf.GSOMaxSize, "err", err)
	}

	if pms := conf.RuntimeConfig.PortMappings; len(pms) > 0 {
		hp, err := newHostPorts(conf.DataDir, conf.Bridge)
		if err != nil {
			return nil, err
		}
		if err := hp.Add(context.Background(), args.ContainerID, podIP, pms); err != nil {
			return nil, err
		}
		// No rollback needed after this point: it is the last step.
	}
	success = true
	p.log().Info("pod attached", "container", args.ContainerID, "ifname", args.IfName, "ip", podIP, "hostVeth", hostName)
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
			{Name: hostName, Mac: hostVeth.Attrs().HardwareAddr.String()},
			{Name: args.IfName, Mac: podVeth.Attrs().HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs: []*current.IPConfig{{
			Interface: current.Int(2),
			Address:   *prefixToIPNet(netip.PrefixFrom(podIP, cidr.Bits())),
			Gateway:   net.IP(gw.AsSlice()),
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  net.IP(gw.AsSlice()),
		}},
	}, nil
}

// Del removes the attachment. It succeeds for unknown containers and for a
// pod netns that no longer exists, so a runtime can repeat it freely.
//
// Nearly all of its time is the kernel unregistering the veth (an RCU grace
// period under the rtnl lock); the rest is a few netlink requests and one
// unlink.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	store, _, err := p.openStore(conf)
	if err != nil {
		return err
	}
	if hostPortsUsed(conf.DataDir) {
		hp, err := newHostPorts(conf.DataDir, "")
		if err != nil {
			return err
		}
		if _, err := hp.Remove(context.Background(), func(id string) bool { return id != args.ContainerID }); err != nil {
			return err
		}
	}
	if args.Netns != "" {
		if err := delPodInterface(args.Netns, args.IfName); err != nil {
			return err
		}
	}
	node, err := nodeHandle()
	if err != nil {
		return err
	}
	defer node.Close()
	if err := delLinkIfExists(node, hostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	// Release last: the address must not be reused while the old interface lives.
	if _, err := store.Release(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return types.NewError(types.ErrIOFailure, "knet: release pod IP", err.Error())
	}
	return nil
}

// delPodInterface deletes the pod's interface, which takes the host end of
// the veth with it. A netns that is gone (or was never a netns) is fine.
func delPodInterface(path, ifName string) error {
	podNS, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil
		}
		return fmt.Errorf("open pod netns %s: %w", path, err)
	}
	defer podNS.Close()
	pod, err := podHandle(podNS)
	if err != nil {
		return err
	}
	defer pod.Close()
	if err := delLinkIfExists(pod, ifName); err != nil {
		return fmt.Errorf("delete %s in pod netns %s: %w", ifName, path, err)
	}
	return nil
}

// Check verifies that the interface, its address and the default route from
// the previous result exist in the pod, and that the host side is on the bridge.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "knet: CHECK needs prevResult", "the runtime must pass the ADD result")
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "knet: cannot parse prevResult", err.Error())
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "knet: cannot convert prevResult", err.Error())
	}
	store, _, err := p.openStore(conf)
	if err != nil {
		return err
	}
	got, ok, err := store.Lookup(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no IP reservation for container %s/%s: delete and re-create the pod", args.ContainerID, args.IfName)
	}
	var podIPs []*current.IPConfig
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface < len(prev.Interfaces) && prev.Interfaces[*ipc.Interface].Name == args.IfName {
			podIPs = append(podIPs, ipc)
		}
	}
	if len(podIPs) != 1 {
		return fmt.Errorf("prevResult has %d addresses for %s, want 1", len(podIPs), args.IfName)
	}
	want, _ := netip.AddrFromSlice(podIPs[0].Address.IP.To4())
	if want != got {
		return fmt.Errorf("prevResult address %s differs from the IPAM reservation %s", want, got)
	}

	hostName := hostVethName(args.ContainerID, args.IfName)
	hostVeth, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %s missing: %w", hostName, err)
	}
	br, err := netlinksafe.LinkByName(conf.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s missing: %w", conf.Bridge, err)
	}
	if hostVeth.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %s is not attached to bridge %s", hostName, conf.Bridge)
	}

	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("interface %s missing in pod: %w", args.IfName, err)
		}
		if _, ok := link.(*netlink.Veth); !ok {
			return fmt.Errorf("interface %s in pod is a %s, not a veth", args.IfName, link.Type())
		}
		if err := ip.ValidateExpectedInterfaceIPs(args.IfName, podIPs); err != nil {
			return err
		}
		routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list routes in pod: %w", err)
		}
		for _, want := range prev.Routes {
			found := false
			for _, r := range routes {
				dst := "0.0.0.0/0"
				if r.Dst != nil {
					dst = r.Dst.String()
				}
				if dst == want.Dst.String() && (want.GW == nil || want.GW.Equal(r.Gw)) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("route %s via %s missing in pod", want.Dst.String(), want.GW)
			}
		}
		return nil
	})
}

// GC frees IP reservations and hostPort entries of attachments that are not
// in cni.dev/valid-attachments.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	store, _, err := p.openStore(conf)
	if err != nil {
		return err
	}
	valid := make([]ipam.Attachment, 0, len(conf.ValidAttachments))
	ids := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid = append(valid, ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
		ids[a.ContainerID] = true
	}
	freed, err := store.GC(valid)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "knet: IPAM garbage collection", err.Error())
	}
	if len(freed) > 0 {
		node, err := nodeHandle()
		if err != nil {
			return err
		}
		defer node.Close()
		for _, r := range freed {
			p.log().Info("gc: released pod IP", "ip", r.IP, "container", r.ContainerID, "ifname", r.IfName)
			// The veth normally died with the pod netns; remove a leftover host side.
			_ = delLinkIfExists(node, hostVethName(r.ContainerID, r.IfName))
		}
	}
	hp, err := newHostPorts(conf.DataDir, "")
	if err != nil {
		return err
	}
	if _, err := hp.Remove(context.Background(), func(id string) bool { return ids[id] }); err != nil {
		return err
	}
	return nil
}

// Status reports whether the plugin can serve ADDs: code 50 ("plugin not
// available") when the podCIDR is missing or invalid or the data dir is not
// writable.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf := &NetConf{}
	if err := json.Unmarshal(args.StdinData, conf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "knet: cannot decode network config", err.Error())
	}
	conf.Defaults()
	if err := conf.Validate(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "knet: not ready", err.Error())
	}
	if err := os.MkdirAll(conf.DataDir, 0o755); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "knet: IPAM data dir not writable", err.Error())
	}
	f, err := os.CreateTemp(conf.DataDir, ".status-*")
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "knet: IPAM data dir not writable", err.Error())
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}
