package kubelet

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubeletVersion is the Kubernetes version knet's kubelet implements.
const kubeletVersion = "v1.35.4"

// maxPods is the kubelet's default --max-pods.
const maxPods = 110

// nodeProvider implements virtual-kubelet's node.NodeProvider.
type nodeProvider struct{ k *Kubelet }

func (p nodeProvider) Ping(context.Context) error { return nil }

func (p nodeProvider) NotifyNodeStatus(_ context.Context, cb func(*corev1.Node)) {
	p.k.nodeMu.Lock()
	p.k.notifyNode = cb
	p.k.nodeMu.Unlock()
}

// allocatable is what the node offers pods (no reservations).
func (k *Kubelet) allocatable() corev1.ResourceList {
	rl := corev1.ResourceList{
		corev1.ResourceCPU:  *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourcePods: *resource.NewQuantity(maxPods, resource.DecimalSI),
	}
	if mem := memTotal(); mem > 0 {
		rl[corev1.ResourceMemory] = *resource.NewQuantity(mem, resource.BinarySI)
	}
	var fs syscall.Statfs_t
	dir := k.cfg.StateDir
	if syscall.Statfs(dir, &fs) != nil {
		dir = "/"
		_ = syscall.Statfs(dir, &fs)
	}
	if fs.Blocks > 0 {
		rl[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI)
	}
	return rl
}

// memTotal reads MemTotal from /proc/meminfo, in bytes.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// initialNode is the Node the kubelet registers.
func (k *Kubelet) initialNode() *corev1.Node {
	alloc := k.allocatable()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname":  k.cfg.NodeName,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      runtime.GOARCH,
				"beta.kubernetes.io/os":   "linux",
				"beta.kubernetes.io/arch": runtime.GOARCH,
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    alloc,
			Allocatable: alloc.DeepCopy(),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: k.cfg.NodeIP.String()},
				{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: k.listenPort()}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               k.cfg.NodeName,
				SystemUUID:              k.cfg.NodeName,
				BootID:                  bootID(),
				KernelVersion:           kernelVersion(),
				OSImage:                 "knet",
				ContainerRuntimeVersion: "knet://" + k.cfg.Version,
				KubeletVersion:          kubeletVersion,
				KubeProxyVersion:        "",
				OperatingSystem:         "linux",
				Architecture:            runtime.GOARCH,
			},
		},
	}
	n.Status.Conditions = nodeConditions(k.net.Ready(), nil, time.Now())
	k.nodeMu.Lock()
	k.nodeObj = n.DeepCopy()
	k.nodeMu.Unlock()
	return n
}

func (k *Kubelet) listenPort() int32 {
	_, p, _ := strings.Cut(k.cfg.ListenAddr, ":")
	if i := strings.LastIndex(k.cfg.ListenAddr, ":"); i >= 0 {
		p = k.cfg.ListenAddr[i+1:]
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 10250
	}
	return int32(n)
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// nodeConditions are the kubelet's node conditions. Ready follows the
// network plugin, as a kubelet with a CNI runtime reports it.
func nodeConditions(netReady bool, prev []corev1.NodeCondition, now time.Time) []corev1.NodeCondition {
	mk := func(t corev1.NodeConditionType, ok bool, reason, msg string) corev1.NodeCondition {
		st := corev1.ConditionFalse
		if ok {
			st = corev1.ConditionTrue
		}
		c := corev1.NodeCondition{Type: t, Status: st, Reason: reason, Message: msg,
			LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)}
		for _, p := range prev {
			if p.Type == t && p.Status == st {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
		return c
	}
	ready := mk(corev1.NodeReady, true, "KubeletReady", "kubelet is posting ready status")
	if !netReady {
		ready = mk(corev1.NodeReady, false, "KubeletNotReady",
			"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
	}
	return []corev1.NodeCondition{
		mk(corev1.NodeMemoryPressure, false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		mk(corev1.NodeDiskPressure, false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		mk(corev1.NodePIDPressure, false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		ready,
	}
}

// watchNetwork reports the node Ready or NotReady as the CNI configuration
// appears or goes away.
func (k *Kubelet) watchNetwork(ctx context.Context) {
	// Compare with what the registered Node says, so a change between
	// registration and now is not missed.
	last := false
	k.nodeMu.Lock()
	for _, c := range k.nodeObj.Status.Conditions {
		if c.Type == corev1.NodeReady {
			last = c.Status == corev1.ConditionTrue
		}
	}
	k.nodeMu.Unlock()
	// Reading the CNI configuration directory is cheap, and a node waiting for its network is
	// the last step of `knet up`: look often until it is Ready, then once a second.
	const notReadyPoll, readyPoll = 100 * time.Millisecond, time.Second
	t := time.NewTimer(notReadyPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if last {
			t.Reset(readyPoll)
		} else {
			t.Reset(notReadyPoll)
		}
		ready := k.net.Ready()
		if ready == last {
			continue
		}
		k.nodeMu.Lock()
		cb := k.notifyNode
		if cb == nil {
			// virtual-kubelet has not subscribed yet; report on a later tick.
			k.nodeMu.Unlock()
			continue
		}
		last = ready
		k.nodeObj.Status.Conditions = nodeConditions(ready, k.nodeObj.Status.Conditions, time.Now())
		n := k.nodeObj.DeepCopy()
		k.nodeMu.Unlock()
		k.log.Info("network plugin readiness changed", "ready", ready)
		if cb != nil {
			cb(n)
		}
	}
}
