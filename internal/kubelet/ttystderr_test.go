package kubelet

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestTTYWithoutStderr(t *testing.T) {
	var got string
	h := ttyWithoutStderr(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.URL.RawQuery }))
	cases := []struct{ url, want string }{
		{"/exec/ns/pod/c?command=sh&error=1&output=1&tty=1", "command=sh&output=1&tty=1"},
		{"/attach/ns/pod/c?error=1&output=1&tty=1", "output=1&tty=1"},
		{"/exec/ns/pod/c?command=sh&error=1&output=1", "command=sh&error=1&output=1"},
		{"/containerLogs/ns/pod/c?error=1&tty=1", "error=1&tty=1"},
	}
	for _, c := range cases {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, c.url, nil))
		if got != c.want {
			t.Errorf("%s: handler saw %q, want %q", c.url, got, c.want)
		}
	}
}
