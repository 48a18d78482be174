package controlplane

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthzExcludingRewritesOnlyPlainHealthz(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
	}))
	defer srv.Close()
	client := &http.Client{Transport: healthzExcluding{http.DefaultTransport, rbacBootstrapCheck}}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/healthz"},
		{http.MethodGet, "/healthz?verbose"},
		{http.MethodGet, "/readyz"},
		{http.MethodPost, "/healthz"},
		{http.MethodGet, "/api/v1/nodes"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []string{
		"GET /healthz?exclude=poststarthook%2Frbac%2Fbootstrap-roles",
		"GET /healthz?verbose",
		"GET /readyz",
		"POST /healthz",
		"GET /api/v1/nodes",
	}
	if len(got) != len(want) {
		t.Fatalf("requests = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %q, want %q", i, got[i], want[i])
		}
	}
}
