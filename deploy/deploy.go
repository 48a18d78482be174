// Package deploy holds the cluster add-on manifests, as a real cluster would apply them. `knet up`
// applies them from this embedded copy.
package deploy

import "embed"

// Addons are the manifests `knet up` applies, in order.
var Addons = []string{"dns.yaml", "ingress.yaml"}

//go:embed *.yaml
var Files embed.FS
