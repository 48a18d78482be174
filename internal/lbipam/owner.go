package lbipam

import (
	"bytes"
	"crypto/sha256"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// ElectOwner returns the node that announces ip among the eligible nodes,
// "" if there is none. Every speaker computes it alone from the same inputs
// and gets the same answer. Like MetalLB, nodes are ranked by
// sha256(node + "#" + ip), so addresses spread over the nodes and a node
// leaving moves only the addresses it owned.
func ElectOwner(ip netip.Addr, eligible []string) string {
	best, bestSum := "", [sha256.Size]byte{}
	for _, n := range eligible {
		sum := sha256.Sum256([]byte(n + "#" + ip.String()))
		if best == "" || bytes.Compare(sum[:], bestSum[:]) < 0 || (sum == bestSum && n < best) {
			best, bestSum = n, sum
		}
	}
	return best
}

// labelExcludeLB is the well-known label that keeps a node out of
// load-balancer pools; MetalLB honours it too.
const labelExcludeLB = "node.kubernetes.io/exclude-from-external-load-balancers"

// announceInputs is everything the choice of owners depends on.
type announceInputs struct {
	Services       []*v1.Service
	EndpointSlices []*discovery.EndpointSlice
	Nodes          []*v1.Node
	// Alive holds the nodes whose speaker was heard recently (including
	// this one).
	Alive map[string]bool
}

// nodeReady reports the Ready condition.
func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// owners maps every announced LoadBalancer address to its owner node. An
// address shared by several Services is eligible on the union of their
// eligible nodes (sharing requires equal backends under Local, so in
// practice the sets agree).
func owners(in announceInputs) map[netip.Addr]string {
	var members []string
	for _, n := range in.Nodes {
		if _, excluded := n.Labels[labelExcludeLB]; !excluded && nodeReady(n) && in.Alive[n.Name] {
			members = append(members, n.Name)
		}
	}
	localNodes := map[string]map[string]bool{} // namespace/name → nodes with a ready endpoint
	for _, s := range in.EndpointSlices {
		svc := s.Labels[discovery.LabelServiceName]
		if svc == "" {
			continue
		}
		key := s.Namespace + "/" + svc
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			if localNodes[key] == nil {
				localNodes[key] = map[string]bool{}
			}
			localNodes[key][*ep.NodeName] = true
		}
	}
	eligible := map[netip.Addr]map[string]bool{}
	for _, svc := range in.Services {
		if !Handled(svc) {
			continue
		}
		for _, ip := range ingressIPs(svc) {
			if eligible[ip] == nil {
				eligible[ip] = map[string]bool{}
			}
			for _, m := range members {
				if svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal || localNodes[svc.Namespace+"/"+svc.Name][m] {
					eligible[ip][m] = true
				}
			}
		}
	}
	out := map[netip.Addr]string{}
	for ip, set := range eligible {
		nodes := make([]string, 0, len(set))
		for n := range set {
			nodes = append(nodes, n)
		}
		slices.Sort(nodes)
		if o := ElectOwner(ip, nodes); o != "" {
			out[ip] = o
		}
	}
	return out
}
