package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"knet/internal/cluster"
)

type upOptions struct {
	name       string
	nodes      int
	manifests  []string
	imageMap   string
	timeout    time.Duration
	podNetwork string
}

func upCommand() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a cluster on this machine and return when it is ready",
		Long: `Start a Kubernetes cluster on this machine: the upstream control plane in-process, and
--nodes virtual nodes (network namespaces) whose kubelet runs pods as processes. Returns when
nodes are Ready and the manifests given with -f are applied; the cluster keeps running in the
background until 'knet down'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(o) },
	}
	cmd.Flags().StringVar(&o.name, "name", cluster.DefaultName, "cluster name; several clusters with different names can run at once")
	cmd.Flags().IntVar(&o.nodes, "nodes", 2, "number of virtual nodes")
	cmd.Flags().StringArrayVarP(&o.manifests, "filename", "f", nil, "manifest file or directory to apply once the cluster is ready (repeatable)")
	cmd.Flags().StringVar(&o.imageMap, "image-map", "", "YAML file mapping images to host binaries (see README: Images)")
	cmd.Flags().StringVar(&o.podNetwork, "pod-network", "host-gw", "how pod traffic crosses nodes: host-gw (routes via node IPs; nodes share an L2 segment) or vxlan (overlay)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for the cluster to become ready")
	return cmd
}

func runUp(o upOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("knet up needs root (it creates network namespaces, links and routes); run it with sudo")
	}
	if err := cluster.ValidateName(o.name); err != nil {
		return err
	}
	for _, bin := range []string{"nsenter", "unshare", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: install util-linux and nftables (apt-get install util-linux nftables)", bin)
		}
	}
	if o.podNetwork != "host-gw" && o.podNetwork != "vxlan" {
		return fmt.Errorf("--pod-network %q: use host-gw or vxlan", o.podNetwork)
	}
	for _, m := range o.manifests {
		if _, err := os.Stat(m); err != nil {
			return fmt.Errorf("manifest %s: %w", m, err)
		}
	}
	if o.imageMap != "" {
		if _, err := os.Stat(o.imageMap); err != nil {
			return fmt.Errorf("--image-map: %w", err)
		}
	}
	dir := filepath.Join(cluster.StateRoot, o.name)
	if cluster.DaemonRunning(dir) {
		return fmt.Errorf("cluster %q is already running (use it: `knet kubectl get nodes`; or stop it: `knet down --name %s`; or pick another --name)", o.name, o.name)
	}
	if l, err := cluster.LoadLayout(o.name); err == nil {
		fmt.Printf("• removing leftovers of a previous cluster %q\n", o.name)
		if err := cluster.Teardown(l); err != nil {
			return fmt.Errorf("clean up the previous cluster %q: %w", o.name, err)
		}
	}
	l, err := cluster.NewLayout(o.name, cluster.FreeIndex(o.name), o.nodes)
	if err != nil {
		return err
	}
	if err := cluster.CheckAddressSpace(l); err != nil {
		return err
	}
	if err := cluster.SaveLayout(l); err != nil {
		return fmt.Errorf("save cluster state: %w", err)
	}
	start := time.Now()
	if err := startDaemon(l, o); err != nil {
		_ = cluster.Teardown(l)
		return err
	}
	if err := followProgress(l, o.timeout); err != nil {
		saved := saveLog(l)
		_ = cluster.Teardown(l)
		return fmt.Errorf("%w\n  the daemon's log is saved at %s", err, saved)
	}
	fmt.Printf("✓ cluster %q ready in %.1fs\n\n", o.name, time.Since(start).Seconds())
	kflag := ""
	if o.name != cluster.DefaultName {
		kflag = " --name " + o.name
	}
	fmt.Printf(`Use it:
  knet kubectl get nodes                    # embedded kubectl (KNET_CLUSTER=%[1]s selects this cluster)
  export KUBECONFIG=$(knet kubeconfig%[2]s)  # for your own kubectl
  knet status%[2]s
Stop it and remove everything it made:
  knet down%[2]s
`, o.name, kflag)
	return nil
}

func startDaemon(l cluster.Layout, o upOptions) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cg, err := cluster.OpenCgroup(l.CgroupName())
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(l.Dir(), "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"daemon", "--name", l.Name, "--pod-network", o.podNetwork}
	for _, m := range o.manifests {
		abs, _ := filepath.Abs(m)
		args = append(args, "-f", abs)
	}
	if o.imageMap != "" {
		abs, _ := filepath.Abs(o.imageMap)
		args = append(args, "--image-map", abs)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	fd, err := cg.Into(cmd)
	if err != nil {
		return err
	}
	defer fd.Close()
	cmd.SysProcAttr.Setsid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the cluster daemon: %w", err)
	}
	return cmd.Process.Release()
}

// followProgress prints the daemon's progress lines until it reports ready or failure.
func followProgress(l cluster.Layout, timeout time.Duration) error {
	path := filepath.Join(l.Dir(), progressFile)
	deadline := time.Now().Add(timeout)
	printed := 0
	for time.Now().Before(deadline) {
		lines := readLines(path)
		for ; printed < len(lines); printed++ {
			line := lines[printed]
			switch {
			case line == progressReady:
				return nil
			case strings.HasPrefix(line, progressFailed):
				return errors.New(strings.TrimPrefix(line, progressFailed))
			default:
				fmt.Println("•", line)
			}
		}
		if printed > 0 && !cluster.DaemonRunning(l.Dir()) {
			return errors.New("the cluster daemon exited before the cluster was ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("cluster not ready after %s", timeout)
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	return lines
}

func saveLog(l cluster.Layout) string {
	dst := filepath.Join(os.TempDir(), fmt.Sprintf("knet-%s-failed-%d.log", l.Name, time.Now().Unix()))
	out, err := os.Create(dst)
	if err != nil {
		return filepath.Join(l.Dir(), "daemon.log")
	}
	defer out.Close()
	for _, f := range append([]string{filepath.Join(l.Dir(), "daemon.log")}, globLogs(l)...) {
		if b, err := os.ReadFile(f); err == nil {
			fmt.Fprintf(out, "==> %s <==\n%s\n", f, b)
		}
	}
	return dst
}

func globLogs(l cluster.Layout) []string {
	m, _ := filepath.Glob(filepath.Join(l.Dir(), "logs", "*.log"))
	return m
}
