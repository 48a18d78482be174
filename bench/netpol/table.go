package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// table collects result rows: metric, value, goal, note.
type table struct{ rows [][4]string }

func (t *table) add(metric, value, goal, note string) {
	t.rows = append(t.rows, [4]string{metric, value, goal, note})
}

func (t *table) print(w io.Writer) {
	head := [4]string{"metric", "knet", "goal", "note"}
	width := [4]int{}
	for _, r := range append([][4]string{head}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r [4]string) {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < 3 {
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
Latency: from just before the API call (create/delete of a policy isolating the server for ingress)
to the start of the first connection attempt of the final run in the new state, as seen by a prober
in the client pod's network namespace (a new TCP connect every 5 ms, 50 ms timeout; host clock).
Resolution: one probe interval. Published numbers of kube-network-policies: 322 ms / 2.3 s.
conn/s: closed loop of new TCP connections (closed with RST) from the client pod to the server pod on
the other node; the bulk policies select other pods (3 per node), the server is selected only by the
policy that allows the client; server2 (same node) is selected by none. Rounds alternate between the
two, so their ratio is measured under the same load.`)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}
