// Command cluster benchmarks `knet up`: seconds from `knet up --nodes 2` to ready, pod create →
// Ready latency (p50/p99) for 50 pods, and the memory of the idle 2-node cluster. It prints a
// table; it asserts nothing.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	knet := flag.String("knet", "bin/knet", "knet binary")
	name := flag.String("name", "bench", "cluster name")
	pods := flag.Int("pods", 50, "pods to start")
	keep := flag.Bool("keep", false, "leave the cluster running (to read its logs); `knet down --name NAME` removes it")
	flag.Parse()
	if err := run(*knet, *name, *pods, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(knet, name string, n int, keep bool) error {
	_ = exec.Command(knet, "down", "--name", name).Run()
	load := loadAverage()
	start := time.Now()
	out, err := exec.Command(knet, "up", "--name", name, "--nodes", "2").CombinedOutput()
	if err != nil {
		return fmt.Errorf("knet up: %v\n%s", err, out)
	}
	upSeconds := time.Since(start).Seconds()
	if !keep {
		defer exec.Command(knet, "down", "--name", name).Run()
	}
	// The daemon's step lines carry their time since it started: where `knet up` spent it.
	fmt.Println("knet up steps:")
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "• [") {
			fmt.Println("  " + line)
		}
	}

	time.Sleep(5 * time.Second) // settle: controllers finish their start-up work
	idleRSS, idlePSS, procs := cgroupMemory("knet-" + name)

	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join("/var/lib/knet", name, "kubeconfig"))
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 200, 400
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	lat, err := podStartup(client, n)
	if err != nil {
		return err
	}
	fmt.Printf("\n%-44s %s\n", "metric", "value")
	fmt.Printf("%-44s %.2f s\n", "knet up --nodes 2 → ready", upSeconds)
	pick := func(f func(podTimes) time.Duration) []time.Duration {
		var d []time.Duration
		for _, t := range lat {
			d = append(d, f(t))
		}
		return d
	}
	readyLat := pick(func(t podTimes) time.Duration { return t.ready })
	fmt.Printf("%-44s %.0f ms\n", fmt.Sprintf("pod create → Ready p50 (%d pods)", n), ms(percentile(readyLat, 50)))
	fmt.Printf("%-44s %.0f ms\n", fmt.Sprintf("pod create → Ready p99 (%d pods)", n), ms(percentile(readyLat, 99)))
	for _, step := range []struct {
		name string
		d    []time.Duration
	}{
		{"  create → scheduled", pick(func(t podTimes) time.Duration { return t.scheduled })},
		{"  create → Running", pick(func(t podTimes) time.Duration { return t.running })},
	} {
		fmt.Printf("%-44s %.0f / %.0f ms\n", step.name+" p50 / p99", ms(percentile(step.d, 50)), ms(percentile(step.d, 99)))
	}
	fmt.Printf("%-44s %.0f MB RSS / %.0f MB PSS (%d processes)\n", "idle 2-node cluster memory", idleRSS, idlePSS, procs)
	fmt.Printf("%-44s %s before, %s after\n", "load average (1, 5, 15 min)", load, loadAverage())
	return nil
}

// loadAverage is the machine's load average: these figures mean little without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// podTimes are the moments, after its create call returned, at which a watch saw a pod bound to
// a node, Running (the kubelet reported a started container) and Ready.
type podTimes struct{ scheduled, running, ready time.Duration }

// podStartup creates n agnhost pods at once and measures, per pod, create → scheduled →
// Running → Ready as seen by a watch.
func podStartup(client kubernetes.Interface, n int) ([]podTimes, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := "bench-startup"
	_, _ = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	for {
		if _, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	// Events are read while the pods are being created, so each moment is taken when the API
	// server sends it, not when the creating loop is done.
	var mu sync.Mutex
	created := map[string]time.Time{}
	times := map[string]*podTimes{}
	allReady := make(chan error, 1)
	go func() {
		ready := 0
		for ready < n {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					allReady <- fmt.Errorf("watch closed with %d/%d ready", ready, n)
					return
				}
				p, isPod := ev.Object.(*corev1.Pod)
				if !isPod || ev.Type == watch.Deleted {
					continue
				}
				mu.Lock()
				since := time.Since(created[p.Name]) // set before the create call
				t := times[p.Name]
				if t == nil {
					t = &podTimes{}
					times[p.Name] = t
				}
				if t.scheduled == 0 && p.Spec.NodeName != "" {
					t.scheduled = since
				}
				if t.running == 0 && p.Status.Phase == corev1.PodRunning {
					t.running = since
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && t.ready == 0 {
						t.ready = since
						ready++
					}
				}
				mu.Unlock()
			case <-ctx.Done():
				allReady <- fmt.Errorf("only %d/%d pods Ready", ready, n)
				return
			}
		}
		allReady <- nil
	}()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%03d", i)
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.56", Args: []string{"pause"}}}}}
		mu.Lock()
		created[name] = time.Now()
		mu.Unlock()
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	if err := <-allReady; err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	var out []podTimes
	for _, t := range times {
		if t.ready > 0 {
			out = append(out, *t)
		}
	}
	_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	return out, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	idx := (len(d)*p + 99) / 100
	if idx < 1 {
		idx = 1
	}
	return d[idx-1]
}

// cgroupMemory sums RSS and PSS (MB) of every process in the cluster's cgroup.
func cgroupMemory(cg string) (rss, pss float64, procs int) {
	roots := []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}
	var b []byte
	for _, r := range roots {
		if data, err := os.ReadFile(filepath.Join(r, cg, "cgroup.procs")); err == nil {
			b = data
			break
		}
	}
	for _, f := range strings.Fields(string(b)) {
		procs++
		rss += statusKB(filepath.Join("/proc", f, "status"), "VmRSS:") / 1024
		pss += statusKB(filepath.Join("/proc", f, "smaps_rollup"), "Pss:") / 1024
	}
	return rss, pss, procs
}

func statusKB(path, key string) float64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == key {
			v, _ := strconv.ParseFloat(fields[1], 64)
			return v
		}
	}
	return 0
}
