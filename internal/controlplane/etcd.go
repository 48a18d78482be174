package controlplane

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// startEtcd runs a single-member etcd on 127.0.0.1 with mutual TLS, so only
// the API server (which holds the etcd client certificate) can read cluster
// state such as Secrets, even from another local user.
func startEtcd(cfg Config, p *clusterPKI, logFile string) (*embed.Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = "knet"
	ec.Dir = filepath.Join(cfg.DataDir, "etcd")
	client := url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(cfg.EtcdPort)}
	peer := url.URL{Scheme: "https", Host: "127.0.0.1:" + strconv.Itoa(cfg.EtcdPeerPort)}
	ec.ListenClientUrls = []url.URL{client}
	ec.AdvertiseClientUrls = []url.URL{client}
	ec.ListenPeerUrls = []url.URL{peer}
	ec.AdvertisePeerUrls = []url.URL{peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	tls := transport.TLSInfo{
		CertFile:       p.etcdServerCert,
		KeyFile:        p.etcdServerKey,
		TrustedCAFile:  p.etcd.certFile,
		ClientCertAuth: true,
	}
	ec.ClientTLSInfo = tls
	ec.PeerTLSInfo = tls
	// The JSON gateway is unused by the API server; keep the surface small.
	ec.EnableGRPCGateway = false
	ec.LogOutputs = []string{logFile}
	ec.LogLevel = "warn"
	// embed.NewConfig leaves this at 0, which makes etcd log every request as an expensive
	// one: 13 MB of "request stats" lines in 20 minutes of a busy cluster.
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	// A single member on loopback has no peer to miss heartbeats from. Its first election
	// comes a random 1 to 10 ticks after start (etcd fast-forwards all but one tick of the
	// randomized election timeout), and etcd is not ready before it: 10 ms ticks make that
	// 10-100 ms instead of up to a second of every `knet up`.
	ec.TickMs, ec.ElectionMs = 10, 100

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd on %s (data %s): %w", client.Host, ec.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed while starting: %w (see %s)", err, logFile)
	case <-time.After(time.Minute):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcd was not ready within a minute (see %s)", logFile)
	}
}
