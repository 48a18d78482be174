package controlplane

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// redirectKlog sends every klog line of the process (the upstream components
// log only through klog) to path, because the daemon's stdout and stderr
// belong to the user. klog's state is process-wide, so this affects any other
// klog user in the process too.
func redirectKlog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open control plane log: %w", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{
		"logtostderr":     "false",
		"alsologtostderr": "false",
		// Without this, errors would still be copied to stderr.
		"stderrthreshold": "FATAL",
		// One line per message, not one per severity file.
		"one_output": "true",
		"v":          "0",
	} {
		if err := fs.Set(name, value); err != nil {
			f.Close()
			return nil, fmt.Errorf("configure klog %s: %w", name, err)
		}
	}
	klog.SetOutput(f)
	return f, nil
}

// rssBytes reads the resident set size of this process.
func rssBytes() (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	var kb int64
	for _, line := range strings.Split(string(data), "\n") {
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}
