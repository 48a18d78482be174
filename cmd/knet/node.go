package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"knet/internal/cni"
	"knet/internal/kubelet"
	"knet/internal/lbipam"
	"knet/internal/netpol"
	"knet/internal/proxy"
)

// nodeConfig is what the daemon hands a `knet node` process.
type nodeConfig struct {
	NodeName       string   `json:"nodeName"`
	NodeIP         string   `json:"nodeIP"`
	Kubeconfig     string   `json:"kubeconfig"`
	ServingCert    string   `json:"servingCert"`
	ServingKey     string   `json:"servingKey"`
	ClientCA       string   `json:"clientCA"`
	StateDir       string   `json:"stateDir"`
	ClusterDNS     []string `json:"clusterDNS"`
	ClusterDomain  string   `json:"clusterDomain"`
	PodNetworkMode string   `json:"podNetworkMode"` // host-gw or vxlan
	ClusterCIDR    string   `json:"clusterCIDR"`    // all pods (masquerade decisions of the service proxy)
	Underlay       string   `json:"underlay"`       // the node's link to other nodes
	ImageMap       string   `json:"imageMap,omitempty"`
	Agnhost        string   `json:"agnhost,omitempty"`
}

func nodeCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:    "node",
		Hidden: true,
		Short:  "Run a virtual node: kubelet with the process runtime, and the networking agent",
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var cfg nodeConfig
			if err := json.Unmarshal(b, &cfg); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runNode(ctx, cfg)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "node configuration file written by the cluster daemon")
	return cmd
}

func runNode(ctx context.Context, cfg nodeConfig) error {
	log := newLogger().With("node", cfg.NodeName)
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return err
	}
	// One client serves the kubelet and the networking agent. At the kubelet's default (50 QPS,
	// burst 100) a burst of pods queued its status updates, token requests and events behind
	// each other for seconds; the API server's priority and fairness protects it instead.
	rc.QPS, rc.Burst = 200, 400
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := waitForAPI(ctx, log, client); err != nil {
		return err
	}
	self, _ := os.Executable()
	cniConf := filepath.Join(cfg.StateDir, "cni", "net.d")
	cniBin := filepath.Join(cfg.StateDir, "cni", "bin")
	if err := installCNIBinary(self, cniBin); err != nil {
		return err
	}
	// The conflist appears once the controller-manager gave this Node a podCIDR; until then the
	// kubelet reports NetworkPluginNotReady, as a real kubelet does.
	_ = os.Remove(filepath.Join(cniConf, "10-knet.conflist"))
	go writeCNIConfig(ctx, log, client, cfg, cniConf)

	if err := startRoutes(ctx, log, client, cfg); err != nil {
		return err
	}

	if err := startServiceProxy(ctx, log, client, cfg); err != nil {
		return err
	}
	if err := startNetworkPolicy(ctx, log, client, cfg); err != nil {
		return err
	}
	if err := startSpeaker(ctx, log, client, cfg); err != nil {
		return err
	}

	images := kubelet.DefaultImages(self, cfg.Agnhost)
	if cfg.ImageMap != "" {
		if images, err = kubelet.LoadImageMap(cfg.ImageMap, images); err != nil {
			return err
		}
	}
	hostResolv := filepath.Join(cfg.StateDir, "resolv.conf")
	if err := writeNodeResolvConf(hostResolv); err != nil {
		return err
	}
	kcfg := kubelet.Config{
		NodeName:       cfg.NodeName,
		NodeIP:         net.ParseIP(cfg.NodeIP),
		Client:         client,
		StateDir:       filepath.Join(cfg.StateDir, "kubelet"),
		CNIConfDir:     cniConf,
		CNIBinDir:      cniBin,
		ClusterDNS:     cfg.ClusterDNS,
		ClusterDomain:  cfg.ClusterDomain,
		HostResolvConf: hostResolv,
		Images:         images,
		ServingCert:    cfg.ServingCert,
		ServingKey:     cfg.ServingKey,
		ClientCA:       cfg.ClientCA,
		ListenAddr:     ":10250",
		HelperBinary:   sandboxHelper(self),
		Logger:         log,
	}
	kl, err := kubelet.New(kcfg)
	if err != nil {
		return err
	}
	return kl.Run(ctx)
}

// installCNIBinary makes the CNI plugin "knet" (the conflist's type) available in binDir: the
// small knet-cni binary next to knet when it is there — the runtime execs the plugin for every
// pod ADD and DEL, and knet-cni skips the ~130 ms of Kubernetes package init the full binary
// pays on each exec — else the knet binary itself, which implements the same plugin.
func installCNIBinary(self, binDir string) error {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	target := self
	if near := filepath.Join(filepath.Dir(self), "knet-cni"); isFile(near) {
		target = near
	}
	link := filepath.Join(binDir, "knet")
	_ = os.Remove(link)
	return os.Symlink(target, link)
}

func writeCNIConfig(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg nodeConfig, dir string) {
	for ctx.Err() == nil {
		node, err := client.CoreV1().Nodes().Get(ctx, cfg.NodeName, metav1.GetOptions{})
		if err == nil && node.Spec.PodCIDR != "" {
			// In host-gw mode every link pod traffic crosses is knet's own (pod veths, the
			// node bridge, the underlay, which SetupUnderlay raises to the kernel maximum), so
			// pods send BIG TCP units; a VXLAN device carries at most 64 KiB per packet.
			mtu, gso := 1500, cni.BigTCPGSOSize
			if cfg.PodNetworkMode == "vxlan" {
				mtu, gso = 1450, 0
			}
			err := cni.WriteConfList(dir, cni.NetConf{
				Bridge:      "knet0",
				PodCIDR:     node.Spec.PodCIDR,
				MTU:         mtu,
				DataDir:     filepath.Join(cfg.StateDir, "ipam"),
				HairpinMode: ptr.To(true),
				GSOMaxSize:  gso,
			})
			if err == nil {
				log.Info("CNI configuration written", "podCIDR", node.Spec.PodCIDR)
				return
			}
			log.Error("write CNI configuration", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeNodeResolvConf gives the virtual node a resolv.conf for dnsPolicy Default: the host's
// search domains and options, but no nameserver — a virtual node has no route to the host's
// resolver, and names outside the cluster are the cluster DNS's job.
func writeNodeResolvConf(path string) error {
	host, _ := os.ReadFile("/etc/resolv.conf")
	var out []string
	for _, line := range strings.Split(string(host), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (f[0] == "search" || f[0] == "options") {
			out = append(out, line)
		}
	}
	return os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

// sandboxHelper prefers the small knet-sandbox binary next to knet for pod holders and container
// start-up: it links no Kubernetes packages, so each pod start skips their init work. The knet
// binary itself implements the same entry points and is the fallback.
func sandboxHelper(self string) string {
	if near := filepath.Join(filepath.Dir(self), "knet-sandbox"); isFile(near) {
		return near
	}
	return self
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// startServiceProxy runs the service proxy for this node (its nftables table lives in the node's
// network namespace, where this process runs).
func startServiceProxy(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg nodeConfig) error {
	recorder := newRecorder(ctx, client, "knet-proxy", cfg.NodeName)
	nodeIP := net.ParseIP(cfg.NodeIP)
	p, err := proxy.New(proxy.Config{
		Client:            client,
		NodeName:          cfg.NodeName,
		NodeIPs:           []net.IP{nodeIP},
		ClusterCIDR:       cfg.ClusterCIDR,
		HealthCheckBindIP: nodeIP,
		Recorder:          recorder,
		Logger:            log.With("component", "proxy"),
	})
	if err != nil {
		return fmt.Errorf("service proxy: %w", err)
	}
	go func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("service proxy stopped", "err", err)
		}
	}()
	return nil
}

// startNetworkPolicy enforces NetworkPolicies for this node's pods (table knet-netpol).
func startNetworkPolicy(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg nodeConfig) error {
	c, err := netpol.New(netpol.Config{
		Client:   client,
		NodeName: cfg.NodeName,
		NodeIPs:  []net.IP{net.ParseIP(cfg.NodeIP)},
		Logger:   log.With("component", "netpol"),
	})
	if err != nil {
		return fmt.Errorf("network policy: %w", err)
	}
	go func() {
		if err := c.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("network policy stopped", "err", err)
		}
	}()
	return nil
}

// startSpeaker announces this node's share of LoadBalancer addresses on the underlay (L2).
func startSpeaker(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg nodeConfig) error {
	s, err := lbipam.NewSpeaker(lbipam.SpeakerConfig{
		Client:    client,
		NodeName:  cfg.NodeName,
		Interface: cfg.Underlay,
		Logger:    log.With("component", "speaker"),
	})
	if err != nil {
		return fmt.Errorf("LoadBalancer speaker: %w", err)
	}
	go func() {
		if err := s.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("LoadBalancer speaker stopped", "err", err)
		}
	}()
	return nil
}

// waitForAPI returns once this node may read what its agents watch. The daemon starts node
// processes together with the control plane, and an informer whose first list fails backs off
// for most of a second, so the node asks first, every 50 ms: listing EndpointSlices needs the
// API server, its authorizers' caches and the daemon's knet:node ClusterRole binding.
func waitForAPI(ctx context.Context, log *slog.Logger, client kubernetes.Interface) error {
	start := time.Now()
	lastLog := start
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil && time.Since(lastLog) > 10*time.Second {
			log.Info("waiting for the API server", "err", err)
			lastLog = time.Now()
		}
		return err == nil, nil
	})
	if err != nil {
		return err
	}
	log.Info("API server reachable", "waited", time.Since(start).Round(time.Millisecond))
	return nil
}
