package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// network is the pod network as the kubelet sees it: the node's CNI plugin.
type network interface {
	// Ready reports whether a CNI network configuration exists; until then
	// the node is NotReady and pods with their own network wait.
	Ready() bool
	// Setup attaches the pod sandbox to the network and returns its IPs.
	Setup(ctx context.Context, a cniAttachment) ([]string, error)
	// Teardown detaches it; detaching something already gone is not an error.
	Teardown(ctx context.Context, a cniAttachment) error
}

// cniAttachment is what identifies a pod sandbox to the CNI plugin. It is
// recorded in the pod's state file so a restarted kubelet can detach it.
type cniAttachment struct {
	ContainerID  string        `json:"containerID"`
	NetNS        string        `json:"netns"`
	Namespace    string        `json:"namespace"`
	Name         string        `json:"name"`
	UID          string        `json:"uid"`
	PortMappings []portMapping `json:"portMappings,omitempty"`
}

// portMapping is the "portMappings" capability argument, as containerd
// passes it to the portmap plugin.
type portMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// cniNetwork calls the node's CNI plugins through libcni, as containerd does.
type cniNetwork struct {
	confDir string
	cni     *libcni.CNIConfig
}

func newCNINetwork(confDir, binDir, cacheDir string) *cniNetwork {
	return &cniNetwork{
		confDir: confDir,
		cni:     libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, nil),
	}
}

// confList loads the first *.conflist (in lexical order) of the conf dir.
func (n *cniNetwork) confList() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(n.confDir, []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("list CNI configurations in %s: %w", n.confDir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI network configuration (*.conflist) in %s: the network plugin is not installed yet", n.confDir)
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("load CNI configuration %s: %w", files[0], err)
	}
	return list, nil
}

func (n *cniNetwork) Ready() bool {
	_, err := n.confList()
	return err == nil
}

func (a cniAttachment) runtimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: a.ContainerID,
		NetNS:       a.NetNS,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", a.Namespace},
			{"K8S_POD_NAME", a.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", a.ContainerID},
			{"K8S_POD_UID", a.UID},
		},
	}
	if len(a.PortMappings) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": a.PortMappings}
	}
	return rt
}

func (n *cniNetwork) Setup(ctx context.Context, a cniAttachment) ([]string, error) {
	list, err := n.confList()
	if err != nil {
		return nil, err
	}
	res, err := n.cni.AddNetworkList(ctx, list, a.runtimeConf())
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (network %s) for pod %s/%s: %w", list.Name, a.Namespace, a.Name, err)
	}
	ips, err := resultIPs(res)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD (network %s) for pod %s/%s: %w", list.Name, a.Namespace, a.Name, err)
	}
	return ips, nil
}

func (n *cniNetwork) Teardown(ctx context.Context, a cniAttachment) error {
	list, err := n.confList()
	if err != nil {
		return err
	}
	if a.NetNS != "" {
		// A netns that is already gone cannot be entered; plugins are asked
		// to release what they hold (IPs, host veth) without it.
		if _, err := os.Stat(a.NetNS); err != nil {
			a.NetNS = ""
		}
	}
	if err := n.cni.DelNetworkList(ctx, list, a.runtimeConf()); err != nil {
		return fmt.Errorf("CNI DEL (network %s) for pod %s/%s: %w", list.Name, a.Namespace, a.Name, err)
	}
	return nil
}

// resultIPs returns the pod IPs of a CNI result (any version the plugin
// speaks, converted to 1.x), IPv4 first, as the kubelet orders podIPs.
func resultIPs(res types.Result) ([]string, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("convert CNI result to %s: %w", current.ImplementedSpecVersion, err)
	}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	ips := append(v4, v6...)
	if len(ips) == 0 {
		return nil, errors.New("the CNI result has no IP address for the pod: check the plugin's ipam configuration")
	}
	return ips, nil
}
