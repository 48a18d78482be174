package proxy

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// ruleCase is a representative Service (with its slices) used by both the
// golden-text tests and the packet-flow tests.
type ruleCase struct {
	name string
	objs []any
}

func ruleCases() []ruleCase {
	localEP := ep{ip: "10.244.1.5", node: testNode}
	remoteEP := ep{ip: "10.244.2.5", node: "node-b"}
	return []ruleCase{
		{"clusterIP with named targetPort", []any{
			makeService("ns1", "web", "10.96.0.10", nil),
			makeSlice("ns1", "web", "web-1", "http", v1.ProtocolTCP, 8080, localEP, remoteEP),
		}},
		{"NodePort", []any{
			makeService("ns1", "np", "10.96.0.20", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
			}),
			makeSlice("ns1", "np", "np-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"LoadBalancer", []any{
			makeService("ns1", "lb", "10.96.0.30", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30081
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.10"}, {Hostname: "ignored.example"}}
			}),
			makeSlice("ns1", "lb", "lb-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"externalIPs", []any{
			makeService("ns1", "ext", "10.96.0.40", func(s *v1.Service) {
				s.Spec.ExternalIPs = []string{"192.0.2.10"}
			}),
			makeSlice("ns1", "ext", "ext-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"no endpoints", []any{
			makeService("ns1", "none", "10.96.0.50", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30082
			}),
			makeSlice("ns1", "none", "none-1", "http", v1.ProtocolTCP, 8080, ep{ip: "10.244.2.9", notReady: true, notServing: true}),
		}},
		{"sessionAffinity ClientIP", []any{
			makeService("ns1", "sticky", "10.96.0.60", func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
			}),
			makeSlice("ns1", "sticky", "sticky-1", "http", v1.ProtocolTCP, 8080, localEP, remoteEP),
		}},
		{"externalTrafficPolicy Local", []any{
			makeService("ns1", "etp", "10.96.0.70", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30083
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 32000
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.11"}}
			}),
			makeSlice("ns1", "etp", "etp-1", "http", v1.ProtocolTCP, 8080, localEP, remoteEP),
		}},
		{"externalTrafficPolicy Local without local endpoints", []any{
			makeService("ns1", "etp-remote", "10.96.0.71", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30084
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 32001
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.12"}}
			}),
			makeSlice("ns1", "etp-remote", "etp-remote-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"internalTrafficPolicy Local", []any{
			makeService("ns1", "itp", "10.96.0.80", func(s *v1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
			}),
			makeSlice("ns1", "itp", "itp-1", "http", v1.ProtocolTCP, 8080, localEP, remoteEP),
		}},
		{"internalTrafficPolicy Local without local endpoints", []any{
			makeService("ns1", "itp-remote", "10.96.0.81", func(s *v1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
			}),
			makeSlice("ns1", "itp-remote", "itp-remote-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"terminating fallback", []any{
			makeService("ns1", "term", "10.96.0.90", nil),
			makeSlice("ns1", "term", "term-1", "http", v1.ProtocolTCP, 8080,
				ep{ip: "10.244.2.20", notReady: true, notServing: true},
				ep{ip: "10.244.2.21", notReady: true, terminating: true}),
		}},
		{"UDP and SCTP", []any{
			makeService("ns1", "multi", "10.96.0.100", func(s *v1.Service) {
				s.Spec.Ports = []v1.ServicePort{
					{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53},
					{Name: "assoc", Protocol: v1.ProtocolSCTP, Port: 9999},
				}
			}),
			makeSlice("ns1", "multi", "multi-1", "dns", v1.ProtocolUDP, 5353, remoteEP),
			makeSlice("ns1", "multi", "multi-2", "assoc", v1.ProtocolSCTP, 9999, remoteEP),
		}},
		{"trafficDistribution PreferClose", []any{
			makeService("ns1", "close", "10.96.0.110", func(s *v1.Service) {
				s.Spec.TrafficDistribution = ptr.To(v1.ServiceTrafficDistributionPreferClose)
			}),
			makeSlice("ns1", "close", "close-1", "http", v1.ProtocolTCP, 8080,
				ep{ip: "10.244.2.30", node: "node-b", forZones: []string{testZone}},
				ep{ip: "10.244.3.30", node: "node-c", forZones: []string{"zone-b"}}),
		}},
		{"trafficDistribution PreferSameNode", []any{
			makeService("ns1", "same", "10.96.0.120", func(s *v1.Service) {
				s.Spec.TrafficDistribution = ptr.To(v1.ServiceTrafficDistributionPreferSameNode)
			}),
			makeSlice("ns1", "same", "same-1", "http", v1.ProtocolTCP, 8080,
				ep{ip: "10.244.1.40", node: testNode, forNodes: []string{testNode}, forZones: []string{testZone}},
				ep{ip: "10.244.2.40", node: "node-b", forNodes: []string{"node-b"}, forZones: []string{testZone}}),
		}},
		{"headless and ExternalName", []any{
			makeService("ns1", "headless", "None", nil),
			makeSlice("ns1", "headless", "headless-1", "http", v1.ProtocolTCP, 8080, remoteEP),
			makeService("ns1", "extname", "", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeExternalName
				s.Spec.ExternalName = "example.com"
				s.Spec.ClusterIPs = nil
			}),
		}},
		{"loadBalancerSourceRanges", []any{
			makeService("ns1", "fw", "10.96.0.130", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30085
				// Whitespace and host bits pass API validation; kube-proxy trims and masks.
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24", " 172.18.0.100/32 ", "2001:db8::/64", "198.51.100.7/24"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.13"}}
			}),
			makeSlice("ns1", "fw", "fw-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"loadBalancerSourceRanges including the node", []any{
			makeService("ns1", "fw-node", "10.96.0.131", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30086
				s.Spec.LoadBalancerSourceRanges = []string{"172.18.0.0/24"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.14"}}
			}),
			makeSlice("ns1", "fw-node", "fw-node-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
		{"loadBalancerSourceRanges all invalid", []any{
			makeService("ns1", "fw-bad", "10.96.0.132", func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30087
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/33"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "172.18.255.15"}}
			}),
			makeSlice("ns1", "fw-bad", "fw-bad-1", "http", v1.ProtocolTCP, 8080, remoteEP),
		}},
	}
}
