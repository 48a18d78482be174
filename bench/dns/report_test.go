package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dnsperf 2.10's summary, as printed after a run.
const sampleSummary = `Statistics:

  Queries sent:         1630
  Queries completed:    1630 (100.00%)
  Queries lost:         3 (0.18%)

  Response codes:       NOERROR 1413 (86.69%), NXDOMAIN 217 (13.31%)
  Average packet size:  request 58, response 124
  Run time (s):         1.011699
  Queries per second:   1611.151143

  Average Latency (s):  0.000076 (min 0.000023, max 0.000392)
  Latency StdDev (s):   0.000045
`

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadPerf(t *testing.T) {
	p, err := readPerf(write(t, "x.perf", sampleSummary))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(p.qps-1611.151143) > 1e-6 || math.Abs(p.meanMs-0.076) > 1e-9 || p.lostPct != 0.18 {
		t.Errorf("qps %v mean %v ms lost %v%%, want 1611.151143, 0.076, 0.18", p.qps, p.meanMs, p.lostPct)
	}
	if p.rcodes != "NOERROR 86.69%, NXDOMAIN 13.31%" {
		t.Errorf("rcodes %q", p.rcodes)
	}
	if _, err := readPerf(write(t, "y.perf", "Error: could not open datafile\n")); err == nil {
		t.Error("readPerf accepted dnsperf output without statistics")
	}
}

func TestReadLatencies(t *testing.T) {
	var b strings.Builder
	b.WriteString("[Status] Sending queries (to 127.0.0.1:5301)\n")
	// 1..100 µs, plus one timeout: the 99th percentile is the 100th of 101 values.
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, "> NOERROR web.ns.svc.cluster.local. A %.6f\n", float64(i)/1e6)
	}
	b.WriteString("> T web.ns.svc.cluster.local. A\n")
	p50, p99, err := readLatencies(write(t, "x.verbose", b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(p50-0.051) > 1e-9 || math.Abs(p99-0.100) > 1e-9 {
		t.Errorf("p50 %v ms, p99 %v ms; want 0.051 and 0.100", p50, p99)
	}
}
