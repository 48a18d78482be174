package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// table collects result rows: metric, knet, kube-proxy, knet/kube-proxy, note.
type table struct{ rows [][5]string }

func (t *table) dur(metric string, knet, kp time.Duration, note string) {
	r := "-"
	if kp > 0 {
		r = fmt.Sprintf("%.3f", float64(knet)/float64(kp))
	}
	t.rows = append(t.rows, [5]string{metric, fmtDur(knet), fmtDur(kp), r, note})
}

func (t *table) num(metric string, knet, kp float64, format, note string) {
	r := "-"
	if kp > 0 {
		r = fmt.Sprintf("%.3f", knet/kp)
	}
	t.rows = append(t.rows, [5]string{metric, fmt.Sprintf(format, knet), fmt.Sprintf(format, kp), r, note})
}

// ratio rows compare each proxy with itself; the knet/kube-proxy column stays empty.
func (t *table) ratio(metric string, knet, kp float64, note string) {
	t.rows = append(t.rows, [5]string{metric, fmt.Sprintf("%.3f", knet), fmt.Sprintf("%.3f", kp), "", note})
}

func (t *table) text(metric, knet, kp, note string) {
	t.rows = append(t.rows, [5]string{metric, knet, kp, "", note})
}

func (t *table) print(w io.Writer) {
	head := [5]string{"metric", "knet", "kube-proxy", "knet/kp", "note"}
	width := [5]int{}
	for _, r := range append([][5]string{head}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r [5]string) {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < 4 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintln(w)
	line(head)
	for _, r := range t.rows {
		line(r)
	}
	fmt.Fprintln(w, `
[poll]   measured from outside: time until "nft get element ip <table> service-ips { ClusterIP . tcp . 80 }"
         succeeds in the proxy's namespace (polled every -poll, default 50 ms; error ≤ one poll).
[metric] kube-proxy's own histograms (kubeproxy_sync_*_proxy_rules_duration_seconds, ip_family IPv4);
         knet's agent exposes no sync metric and logs syncs only at debug level. [log+poll] for knet: from
         its "caches synced, starting sync loop" log line to the poll that sees the last Service.
10k:     both proxies are stopped while the 10k objects are created, so 10k sync time is the restart.
restart: the proxy is stopped, its table deleted, and started again with all Services in the API;
         the time includes the informer list, i.e. what a node sees after a proxy restart.
[trace]  offsets from the Service create call: create calls returned, ADDED events on the benchmark's
         own watch (a stand-in for the proxy's informer), and knet's commits seen by "nft monitor" in
         its namespace (the Service alone: its no-endpoints reject; then its service-ips element).
         "reject committed -": knet waits up to 50 ms for a new Service's EndpointSlice, so a slice
         that follows within that time is programmed with the Service and no reject is committed.`)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
