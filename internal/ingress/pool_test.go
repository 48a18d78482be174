package ingress

import "testing"

// TestUntriedVisitsEveryEndpointOnce: retries after refused connections reach every endpoint,
// never one that already failed, then give up.
func TestUntriedVisitsEveryEndpointOnce(t *testing.T) {
	a, b, c := &endpointPool{addr: "a"}, &endpointPool{addr: "b"}, &endpointPool{addr: "c"}
	be := &backend{endpoints: []*endpointPool{a, b, c}}
	tried := map[*endpointPool]bool{}
	seen := map[string]bool{}
	for ep := be.pick(); ep != nil; ep = be.untried(tried) {
		if tried[ep] {
			t.Fatalf("endpoint %s offered twice", ep.addr)
		}
		tried[ep] = true
		seen[ep.addr] = true
	}
	if len(seen) != 3 {
		t.Errorf("retries reached %v, want all 3 endpoints", seen)
	}
}
