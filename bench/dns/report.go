package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// The files run.sh leaves in its directory, per server and query set:
// <server>_<qset>.perf (dnsperf's summary), <server>_<qset>.verbose (dnsperf
// -v: one line per response with its latency) and <server>.status (the
// server's /proc/PID/status after its runs).
var (
	servers = []struct{ id, label string }{
		{"knet-bin", "knet (knet dns -> knet-dns)"},
		{"knet-lib", "knet (library in dnsbench)"},
		{"coredns-cache", "CoreDNS (cache 30)"},
		{"coredns-nocache", "CoreDNS (no cache)"},
	}
	querySets = []string{"cluster", "external"}
)

type perf struct {
	qps, meanMs, lostPct float64
	rcodes               string
	p50Ms, p99Ms         float64 // from the verbose run; NaN without it
}

func reportMain(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "directory with run.sh's dnsperf outputs")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("report needs --dir")
	}
	results := map[string]perf{}
	rss := map[string][4]float64{} // VmRSS, VmHWM, RssAnon, RssFile
	var ran []struct{ id, label string }
	for _, s := range servers {
		if _, err := os.Stat(filepath.Join(*dir, s.id+".status")); errors.Is(err, os.ErrNotExist) {
			fmt.Printf("(%s did not run)\n", s.label)
			continue
		}
		ran = append(ran, s)
		for _, q := range querySets {
			p, err := readPerf(filepath.Join(*dir, s.id+"_"+q+".perf"))
			if err != nil {
				return err
			}
			if p.p50Ms, p.p99Ms, err = readLatencies(filepath.Join(*dir, s.id+"_"+q+".verbose")); err != nil {
				return err
			}
			results[s.id+"/"+q] = p
		}
		m, err := readRSS(filepath.Join(*dir, s.id+".status"))
		if err != nil {
			return err
		}
		rss[s.id] = m
	}
	servers = ran

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "queries\tserver\tQPS\tmean ms\tp50 ms*\tp99 ms*\tlost %\tresponse codes\t")
	for _, q := range querySets {
		for _, s := range servers {
			p := results[s.id+"/"+q]
			fmt.Fprintf(w, "%s\t%s\t%.0f\t%.3f\t%.3f\t%.3f\t%.2f\t%s\t\n", q, s.label, p.qps, p.meanMs, p.p50Ms, p.p99Ms, p.lostPct, p.rcodes)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "server\tRSS MiB after run\tpeak RSS MiB\tanonymous MiB\tfile-backed MiB (binary text)\t")
	for _, s := range servers {
		m := rss[s.id]
		fmt.Fprintf(w, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", s.label, m[0], m[1], m[2], m[3])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println("* p50/p99 from a second run with dnsperf -v (same load; printing costs dnsperf some throughput)")

	fmt.Println()
	fmt.Println("knet / CoreDNS (goals: QPS >= 1.5x, memory <= 0.5x)")
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "knet\tmetric\tvs cache 30\tvs no cache\t")
	ratio := func(a, b float64) string {
		if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	for _, k := range []string{"knet-bin", "knet-lib"} {
		if _, ok := rss[k]; !ok {
			continue
		}
		row := func(metric string, get func(id string) float64) {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", k, metric, ratio(get(k), get("coredns-cache")), ratio(get(k), get("coredns-nocache")))
		}
		for _, q := range querySets {
			row("QPS "+q, func(id string) float64 { return results[id+"/"+q].qps })
			row("p99 latency "+q, func(id string) float64 { return results[id+"/"+q].p99Ms })
		}
		row("RSS after run", func(id string) float64 { return rss[id][0] })
		row("peak RSS", func(id string) float64 { return rss[id][1] })
		row("anonymous RSS", func(id string) float64 { return rss[id][2] })
	}
	return w.Flush()
}

var (
	reQPS    = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	reMean   = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
	reLost   = regexp.MustCompile(`Queries lost:\s+\d+ \(([0-9.]+)%\)`)
	reRcodes = regexp.MustCompile(`Response codes:\s+(.*)`)
)

// readPerf parses dnsperf's summary.
func readPerf(path string) (perf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return perf{}, fmt.Errorf("read dnsperf output: %w", err)
	}
	s := string(b)
	num := func(re *regexp.Regexp) (float64, error) {
		m := re.FindStringSubmatch(s)
		if m == nil {
			return 0, fmt.Errorf("%s: no %q in dnsperf's output (did it fail?)", path, re.String())
		}
		return strconv.ParseFloat(m[1], 64)
	}
	var p perf
	if p.qps, err = num(reQPS); err != nil {
		return p, err
	}
	if p.meanMs, err = num(reMean); err != nil {
		return p, err
	}
	p.meanMs *= 1000
	if p.lostPct, err = num(reLost); err != nil {
		return p, err
	}
	if m := reRcodes.FindStringSubmatch(s); m != nil {
		// "NOERROR 1000 (50.00%), NXDOMAIN 1000 (50.00%)" -> "NOERROR 50.00%, NXDOMAIN 50.00%"
		p.rcodes = regexp.MustCompile(`\s\d+ \(([0-9.]+%)\)`).ReplaceAllString(strings.TrimSpace(m[1]), " $1")
	}
	return p, nil
}

// readLatencies returns the median and 99th percentile of the latencies in
// dnsperf -v output, whose response lines end with the latency in seconds
// ("> NOERROR name A 0.000123"); timeouts ("T") count as +Inf.
func readLatencies(path string) (p50, p99 float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read dnsperf -v output: %w", err)
	}
	defer f.Close()
	var lat []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "> ") {
			continue
		}
		fields := strings.Fields(line)
		if fields[1] == "T" {
			lat = append(lat, math.Inf(1))
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		lat = append(lat, v*1000)
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	if len(lat) == 0 {
		return math.NaN(), math.NaN(), nil
	}
	slices.Sort(lat)
	at := func(q float64) float64 { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	return at(0.50), at(0.99), nil
}

// readRSS reads VmRSS, VmHWM (peak), RssAnon and RssFile from a saved
// /proc/PID/status, in MiB.
func readRSS(path string) ([4]float64, error) {
	var m [4]float64
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("read server status: %w", err)
	}
	fields := map[string]int{"VmRSS:": 0, "VmHWM:": 1, "RssAnon:": 2, "RssFile:": 3}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if i, ok := fields[f[0]]; ok {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m[i] = kb / 1024
		}
	}
	if m[0] == 0 {
		return m, fmt.Errorf("%s has no VmRSS line", path)
	}
	return m, nil
}
