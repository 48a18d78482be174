package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A wrk 4.1 --latency report with the count script's line appended.
const wrkOut = `Running 6s test @ http://127.0.0.1:40000/hostname
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    2.10ms  45.01ms   93.10%
    Req/Sec    11.52k     1.20k   13.90k    70.00%
  Latency Distribution
     50%  850.00us
     75%    1.43ms
     90%    2.98ms
     99%   11.20ms
  137654 requests in 6.00s, 19.43MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 0, read 2, write 1, timeout 3
Requests/sec:  22942.10
Transfer/sec:      3.24MB
non2xx 9
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 137654, ReqPerSec: 22942.10, P50: 850 * time.Microsecond, P99: 11200 * time.Microsecond,
		Non2xx: 9, SocketErrors: 6}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	// Without the script's line, wrk's own count is used.
	r, _ = parseWrk(strings.Replace(wrkOut, "non2xx 9\n", "", 1))
	if r.Non2xx != 7 {
		t.Errorf("Non2xx without script = %d, want 7", r.Non2xx)
	}
	if _, err := parseWrk("Running 6s test\nunable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parseWrk accepted a report without results")
	}
}

func TestParseWrkDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"850.00us": 850 * time.Microsecond, "1.43ms": 1430 * time.Microsecond, "2.00s": 2 * time.Second, "1.50m": 90 * time.Second,
	} {
		if got, err := parseWrkDuration(in); err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWrkDuration("12xs"); err == nil {
		t.Error("unknown unit accepted")
	}
}

// TestHAProxyConfigValid checks the generated configuration with
// `haproxy -c` when HAProxy is installed.
func TestHAProxyConfigValid(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed")
	}
	dir := t.TempDir()
	_, _, bundle, err := writeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := haproxyConfig{HTTPPort: 18080, HTTPSPort: 18443, CertBundle: bundle, Backends: []string{"127.0.0.1:18001", "127.0.0.1:18002"}}
	text := cfg.render()
	for _, want := range []string{"server ep0 127.0.0.1:18001", "server ep1 127.0.0.1:18002", "balance roundrobin", "http-reuse always",
		"ssl crt " + bundle} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c rejects the config: %v\n%s", err, out)
	}
}
