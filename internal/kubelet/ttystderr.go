package kubelet

import (
	"net/http"
	"strings"
)

// ttyWithoutStderr drops the stderr request of exec and attach calls that ask for a TTY, as the
// upstream kubelet does ("bypassing stderr"): a terminal has one output stream, and client-go
// opens no stderr stream with a TTY. virtual-kubelet refuses such a request outright ("cannot
// exec with tty and stderr"), which broke clients that set both, Cyclonus's prober among them.
func ttyWithoutStderr(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/exec/") || strings.HasPrefix(r.URL.Path, "/attach/") {
			if q := r.URL.Query(); q.Get("tty") == "1" && q.Get("error") == "1" {
				q.Del("error")
				r.URL.RawQuery = q.Encode()
			}
		}
		next.ServeHTTP(w, r)
	})
}
