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
	flag.Parse()
	if err := run(*knet, *name, *pods); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(knet, name string, n int) error {
	_ = exec.Command(knet, "down", "--name", name).Run()
	start := time.Now()
	if out, err := exec.Command(knet, "up", "--name", name, "--nodes", "2").CombinedOutput(); err != nil {
		return fmt.Errorf("knet up: %v\n%s", err, out)
	}
	upSeconds := time.Since(start).Seconds()
	defer exec.Command(knet, "down", "--name", name).Run()

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
	fmt.Printf("%-44s %.0f ms\n", fmt.Sprintf("pod create → Ready p50 (%d pods)", n), ms(percentile(lat, 50)))
	fmt.Printf("%-44s %.0f ms\n", fmt.Sprintf("pod create → Ready p99 (%d pods)", n), ms(percentile(lat, 99)))
	fmt.Printf("%-44s %.0f MB RSS / %.0f MB PSS (%d processes)\n", "idle 2-node cluster memory", idleRSS, idlePSS, procs)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// podStartup creates n agnhost pods at once and measures each one's create → Ready time as
// seen by a watch.
func podStartup(client kubernetes.Interface, n int) ([]time.Duration, error) {
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
	var mu sync.Mutex
	created := map[string]time.Time{}
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
	ready := map[string]time.Duration{}
	for len(ready) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("watch closed with %d/%d ready", len(ready), n)
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					if _, done := ready[p.Name]; !done {
						mu.Lock()
						ready[p.Name] = time.Since(created[p.Name])
						mu.Unlock()
					}
				}
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("only %d/%d pods Ready", len(ready), n)
		}
	}
	var lat []time.Duration
	for _, d := range ready {
		lat = append(lat, d)
	}
	_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	return lat, nil
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
