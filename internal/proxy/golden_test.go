package proxy

// goldenRules is the reviewed nft text each ruleCase adds to an empty table
// (Fake.Dump() lines of the case minus those of an empty cluster).
var goldenRules = map[string]string{
	"clusterIP with named targetPort": `
add chain ip knet-proxy service-ns1/web/tcp/80
add rule ip knet-proxy service-ns1/web/tcp/80 ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/web/tcp/80 numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.5:8080
add rule ip knet-proxy service-ns1/web/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.10 }
add element ip knet-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-ns1/web/tcp/80 }
`,
	"NodePort": `
add chain ip knet-proxy external-ns1/np/tcp/80
add chain ip knet-proxy service-ns1/np/tcp/80
add rule ip knet-proxy external-ns1/np/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/np/tcp/80 goto service-ns1/np/tcp/80
add rule ip knet-proxy service-ns1/np/tcp/80 ip daddr 10.96.0.20 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/np/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.20 }
add element ip knet-proxy service-ips { 10.96.0.20 . tcp . 80 : goto service-ns1/np/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30080 : goto external-ns1/np/tcp/80 }
`,
	"LoadBalancer": `
add chain ip knet-proxy external-ns1/lb/tcp/80
add chain ip knet-proxy service-ns1/lb/tcp/80
add rule ip knet-proxy external-ns1/lb/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/lb/tcp/80 goto service-ns1/lb/tcp/80
add rule ip knet-proxy service-ns1/lb/tcp/80 ip daddr 10.96.0.30 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/lb/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.30 }
add element ip knet-proxy service-ips { 10.96.0.30 . tcp . 80 : goto service-ns1/lb/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.10 . tcp . 80 : goto external-ns1/lb/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30081 : goto external-ns1/lb/tcp/80 }
`,
	"externalIPs": `
add chain ip knet-proxy external-ns1/ext/tcp/80
add chain ip knet-proxy service-ns1/ext/tcp/80
add rule ip knet-proxy external-ns1/ext/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/ext/tcp/80 goto service-ns1/ext/tcp/80
add rule ip knet-proxy service-ns1/ext/tcp/80 ip daddr 10.96.0.40 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/ext/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.40 }
add element ip knet-proxy service-ips { 10.96.0.40 . tcp . 80 : goto service-ns1/ext/tcp/80 }
add element ip knet-proxy service-ips { 192.0.2.10 . tcp . 80 : goto external-ns1/ext/tcp/80 }
`,
	"no endpoints": `
add element ip knet-proxy cluster-ips { 10.96.0.50 }
add element ip knet-proxy no-endpoint-nodeports { tcp . 30082 comment "ns1/none:http" : goto reject-chain }
add element ip knet-proxy no-endpoint-services { 10.96.0.50 . tcp . 80 comment "ns1/none:http" : goto reject-chain }
`,
	"sessionAffinity ClientIP": `
add chain ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.1.5/8080
add chain ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.2.5/8080
add chain ip knet-proxy service-ns1/sticky/tcp/80
add set ip knet-proxy affinity-ns1/sticky/tcp/80__10.244.1.5/8080__600s { type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }
add set ip knet-proxy affinity-ns1/sticky/tcp/80__10.244.2.5/8080__600s { type ipv4_addr ; flags dynamic,timeout ; timeout 600s ; }
add rule ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.1.5/8080 update @affinity-ns1/sticky/tcp/80__10.244.1.5/8080__600s { ip saddr }
add rule ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.1.5/8080 meta l4proto tcp dnat to 10.244.1.5:8080
add rule ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.2.5/8080 update @affinity-ns1/sticky/tcp/80__10.244.2.5/8080__600s { ip saddr }
add rule ip knet-proxy endpoint-ns1/sticky/tcp/80__10.244.2.5/8080 meta l4proto tcp dnat to 10.244.2.5:8080
add rule ip knet-proxy service-ns1/sticky/tcp/80 ip daddr 10.96.0.60 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/sticky/tcp/80 ip saddr @affinity-ns1/sticky/tcp/80__10.244.1.5/8080__600s goto endpoint-ns1/sticky/tcp/80__10.244.1.5/8080
add rule ip knet-proxy service-ns1/sticky/tcp/80 ip saddr @affinity-ns1/sticky/tcp/80__10.244.2.5/8080__600s goto endpoint-ns1/sticky/tcp/80__10.244.2.5/8080
add rule ip knet-proxy service-ns1/sticky/tcp/80 numgen random mod 2 == 0 goto endpoint-ns1/sticky/tcp/80__10.244.1.5/8080
add rule ip knet-proxy service-ns1/sticky/tcp/80 goto endpoint-ns1/sticky/tcp/80__10.244.2.5/8080
add element ip knet-proxy cluster-ips { 10.96.0.60 }
add element ip knet-proxy service-ips { 10.96.0.60 . tcp . 80 : goto service-ns1/sticky/tcp/80 }
`,
	"externalTrafficPolicy Local": `
add chain ip knet-proxy external-ns1/etp/tcp/80
add chain ip knet-proxy local-ns1/etp/tcp/80
add chain ip knet-proxy service-ns1/etp/tcp/80
add rule ip knet-proxy external-ns1/etp/tcp/80 ip saddr 10.244.0.0/16 goto service-ns1/etp/tcp/80
add rule ip knet-proxy external-ns1/etp/tcp/80 fib saddr type local jump mark-for-masquerade
add rule ip knet-proxy external-ns1/etp/tcp/80 fib saddr type local goto service-ns1/etp/tcp/80
add rule ip knet-proxy external-ns1/etp/tcp/80 goto local-ns1/etp/tcp/80
add rule ip knet-proxy local-ns1/etp/tcp/80 meta l4proto tcp dnat to 10.244.1.5:8080
add rule ip knet-proxy service-ns1/etp/tcp/80 ip daddr 10.96.0.70 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/etp/tcp/80 numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.1.5:8080
add rule ip knet-proxy service-ns1/etp/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.70 }
add element ip knet-proxy service-ips { 10.96.0.70 . tcp . 80 : goto service-ns1/etp/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.11 . tcp . 80 : goto external-ns1/etp/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30083 : goto external-ns1/etp/tcp/80 }
`,
	"externalTrafficPolicy Local without local endpoints": `
add chain ip knet-proxy external-ns1/etp-remote/tcp/80
add chain ip knet-proxy service-ns1/etp-remote/tcp/80
add rule ip knet-proxy external-ns1/etp-remote/tcp/80 ip saddr 10.244.0.0/16 goto service-ns1/etp-remote/tcp/80
add rule ip knet-proxy external-ns1/etp-remote/tcp/80 fib saddr type local jump mark-for-masquerade
add rule ip knet-proxy external-ns1/etp-remote/tcp/80 fib saddr type local goto service-ns1/etp-remote/tcp/80
add rule ip knet-proxy service-ns1/etp-remote/tcp/80 ip daddr 10.96.0.71 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/etp-remote/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.71 }
add element ip knet-proxy no-endpoint-nodeports { tcp . 30084 comment "ns1/etp-remote:http" : goto reject-chain }
add element ip knet-proxy no-endpoint-services { 172.18.255.12 . tcp . 80 comment "ns1/etp-remote:http" : goto reject-chain }
add element ip knet-proxy service-ips { 10.96.0.71 . tcp . 80 : goto service-ns1/etp-remote/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.12 . tcp . 80 : goto external-ns1/etp-remote/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30084 : goto external-ns1/etp-remote/tcp/80 }
`,
	"internalTrafficPolicy Local": `
add chain ip knet-proxy local-ns1/itp/tcp/80
add rule ip knet-proxy local-ns1/itp/tcp/80 ip daddr 10.96.0.80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy local-ns1/itp/tcp/80 meta l4proto tcp dnat to 10.244.1.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.80 }
add element ip knet-proxy service-ips { 10.96.0.80 . tcp . 80 : goto local-ns1/itp/tcp/80 }
`,
	"internalTrafficPolicy Local without local endpoints": `
add element ip knet-proxy cluster-ips { 10.96.0.81 }
add element ip knet-proxy no-endpoint-services { 10.96.0.81 . tcp . 80 comment "ns1/itp-remote:http" : goto reject-chain }
`,
	"terminating fallback": `
add chain ip knet-proxy service-ns1/term/tcp/80
add rule ip knet-proxy service-ns1/term/tcp/80 ip daddr 10.96.0.90 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/term/tcp/80 meta l4proto tcp dnat to 10.244.2.21:8080
add element ip knet-proxy cluster-ips { 10.96.0.90 }
add element ip knet-proxy service-ips { 10.96.0.90 . tcp . 80 : goto service-ns1/term/tcp/80 }
`,
	"UDP and SCTP": `
add chain ip knet-proxy service-ns1/multi/sctp/9999
add chain ip knet-proxy service-ns1/multi/udp/53
add rule ip knet-proxy service-ns1/multi/sctp/9999 ip daddr 10.96.0.100 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/multi/sctp/9999 meta l4proto sctp dnat to 10.244.2.5:9999
add rule ip knet-proxy service-ns1/multi/udp/53 ip daddr 10.96.0.100 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/multi/udp/53 meta l4proto udp dnat to 10.244.2.5:5353
add element ip knet-proxy cluster-ips { 10.96.0.100 }
add element ip knet-proxy service-ips { 10.96.0.100 . sctp . 9999 : goto service-ns1/multi/sctp/9999 }
add element ip knet-proxy service-ips { 10.96.0.100 . udp . 53 : goto service-ns1/multi/udp/53 }
`,
	"trafficDistribution PreferClose": `
add chain ip knet-proxy service-ns1/close/tcp/80
add rule ip knet-proxy service-ns1/close/tcp/80 ip daddr 10.96.0.110 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/close/tcp/80 meta l4proto tcp dnat to 10.244.2.30:8080
add element ip knet-proxy cluster-ips { 10.96.0.110 }
add element ip knet-proxy service-ips { 10.96.0.110 . tcp . 80 : goto service-ns1/close/tcp/80 }
`,
	"trafficDistribution PreferSameNode": `
add chain ip knet-proxy service-ns1/same/tcp/80
add rule ip knet-proxy service-ns1/same/tcp/80 ip daddr 10.96.0.120 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/same/tcp/80 meta l4proto tcp dnat to 10.244.1.40:8080
add element ip knet-proxy cluster-ips { 10.96.0.120 }
add element ip knet-proxy service-ips { 10.96.0.120 . tcp . 80 : goto service-ns1/same/tcp/80 }
`,
	"headless and ExternalName": `

`,
	"loadBalancerSourceRanges": `
add chain ip knet-proxy external-ns1/fw/tcp/80
add chain ip knet-proxy firewall-ns1/fw/tcp/80
add chain ip knet-proxy service-ns1/fw/tcp/80
add rule ip knet-proxy external-ns1/fw/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/fw/tcp/80 goto service-ns1/fw/tcp/80
add rule ip knet-proxy firewall-ns1/fw/tcp/80 ip saddr != { 192.0.2.0/24, 172.18.0.100/32, 198.51.100.0/24 } drop
add rule ip knet-proxy service-ns1/fw/tcp/80 ip daddr 10.96.0.130 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/fw/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.130 }
add element ip knet-proxy firewall-ips { 172.18.255.13 . tcp . 80 : goto firewall-ns1/fw/tcp/80 }
add element ip knet-proxy service-ips { 10.96.0.130 . tcp . 80 : goto service-ns1/fw/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.13 . tcp . 80 : goto external-ns1/fw/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30085 : goto external-ns1/fw/tcp/80 }
`,
	"loadBalancerSourceRanges including the node": `
add chain ip knet-proxy external-ns1/fw-node/tcp/80
add chain ip knet-proxy firewall-ns1/fw-node/tcp/80
add chain ip knet-proxy service-ns1/fw-node/tcp/80
add rule ip knet-proxy external-ns1/fw-node/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/fw-node/tcp/80 goto service-ns1/fw-node/tcp/80
add rule ip knet-proxy firewall-ns1/fw-node/tcp/80 ip saddr != { 172.18.0.0/24, 172.18.255.14 } drop
add rule ip knet-proxy service-ns1/fw-node/tcp/80 ip daddr 10.96.0.131 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/fw-node/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.131 }
add element ip knet-proxy firewall-ips { 172.18.255.14 . tcp . 80 : goto firewall-ns1/fw-node/tcp/80 }
add element ip knet-proxy service-ips { 10.96.0.131 . tcp . 80 : goto service-ns1/fw-node/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.14 . tcp . 80 : goto external-ns1/fw-node/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30086 : goto external-ns1/fw-node/tcp/80 }
`,
	"loadBalancerSourceRanges all invalid": `
add chain ip knet-proxy external-ns1/fw-bad/tcp/80
add chain ip knet-proxy firewall-ns1/fw-bad/tcp/80
add chain ip knet-proxy service-ns1/fw-bad/tcp/80
add rule ip knet-proxy external-ns1/fw-bad/tcp/80 jump mark-for-masquerade
add rule ip knet-proxy external-ns1/fw-bad/tcp/80 goto service-ns1/fw-bad/tcp/80
add rule ip knet-proxy firewall-ns1/fw-bad/tcp/80 drop
add rule ip knet-proxy service-ns1/fw-bad/tcp/80 ip daddr 10.96.0.132 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip knet-proxy service-ns1/fw-bad/tcp/80 meta l4proto tcp dnat to 10.244.2.5:8080
add element ip knet-proxy cluster-ips { 10.96.0.132 }
add element ip knet-proxy firewall-ips { 172.18.255.15 . tcp . 80 : goto firewall-ns1/fw-bad/tcp/80 }
add element ip knet-proxy service-ips { 10.96.0.132 . tcp . 80 : goto service-ns1/fw-bad/tcp/80 }
add element ip knet-proxy service-ips { 172.18.255.15 . tcp . 80 : goto external-ns1/fw-bad/tcp/80 }
add element ip knet-proxy service-nodeports { tcp . 30087 : goto external-ns1/fw-bad/tcp/80 }
`,
}

// goldenStatic is the table with no Services.
const goldenStatic = `
add table ip knet-proxy { comment "knet Service proxy; owned by knet, do not edit" ; }
add chain ip knet-proxy cluster-ips-check
add chain ip knet-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip knet-proxy filter-input { type filter hook input priority 0 ; }
add chain ip knet-proxy filter-output { type filter hook output priority 0 ; }
add chain ip knet-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip knet-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip knet-proxy firewall-check
add chain ip knet-proxy mark-for-masquerade
add chain ip knet-proxy masquerading
add chain ip knet-proxy nat-output { type nat hook output priority -100 ; }
add chain ip knet-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip knet-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip knet-proxy nodeport-endpoints-check
add chain ip knet-proxy reject-chain
add chain ip knet-proxy service-endpoints-check
add chain ip knet-proxy services
add set ip knet-proxy cluster-ips { type ipv4_addr ; comment "active ClusterIPs" ; }
add set ip knet-proxy hairpin { type ipv4_addr . ipv4_addr ; flags dynamic,timeout ; timeout 1s ; size 65535 ; comment "source . source of new DNATed connections, to tell hairpin ones" ; }
add set ip knet-proxy nodeport-ips { type ipv4_addr ; comment "node addresses that accept NodePort traffic" ; }
add map ip knet-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "LoadBalancer IPs and ports restricted by loadBalancerSourceRanges" ; }
add map ip knet-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "NodePorts without usable endpoints" ; }
add map ip knet-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "Service IPs and ports without usable endpoints" ; }
add map ip knet-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, externalIP and LoadBalancer IP traffic" ; }
add map ip knet-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add rule ip knet-proxy cluster-ips-check ip daddr @cluster-ips goto reject-chain
add rule ip knet-proxy filter-forward ct state new jump service-endpoints-check
add rule ip knet-proxy filter-forward ct state new jump cluster-ips-check
add rule ip knet-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip knet-proxy filter-input ct state new jump service-endpoints-check
add rule ip knet-proxy filter-output ct state new jump service-endpoints-check
add rule ip knet-proxy filter-output ct state new jump cluster-ips-check
add rule ip knet-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip knet-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip knet-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip knet-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip knet-proxy masquerading ct status dnat update @hairpin { ip saddr . ip saddr } ip saddr . ip daddr @hairpin jump mark-for-masquerade
add rule ip knet-proxy masquerading mark and 0x4000 == 0 return
add rule ip knet-proxy masquerading mark set mark xor 0x4000
add rule ip knet-proxy masquerading masquerade fully-random
add rule ip knet-proxy nat-output jump services
add rule ip knet-proxy nat-postrouting jump masquerading
add rule ip knet-proxy nat-prerouting jump services
add rule ip knet-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip knet-proxy reject-chain meta l4proto tcp reject with tcp reset
add rule ip knet-proxy reject-chain reject
add rule ip knet-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip knet-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip knet-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip knet-proxy nodeport-ips { 172.18.0.2 }
`
