// Command dnsbench is the Go half of bench/dns/run.sh, which benchmarks knet's
// cluster DNS against CoreDNS's kubernetes plugin with dnsperf, both serving
// the same API server on loopback. It creates the test/dnsdiff fixture in its
// own API namespace, writes dnsperf query files, runs knet's DNS server with
// a kubeconfig client (`knet dns` only takes the in-cluster config), waits
// for a server to answer, and turns dnsperf's output into a table. It asserts
// nothing.
//
// It writes only its API namespace and files in the directory it is given;
// it listens and sends only on the loopback addresses it is given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	knetdns "knet/internal/dns"
	"knet/test/dnsdiff"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dnsbench setup|serve-knet|incluster|wait|report [flags] (see bench/dns/run.sh)")
		os.Exit(2)
	}
	var err error
	switch mode, args := os.Args[1], os.Args[2:]; mode {
	case "setup":
		err = setupMain(args)
	case "serve-knet":
		err = serveMain(args)
	case "incluster":
		err = inClusterMain(args)
	case "wait":
		err = waitMain(args)
	case "report":
		err = reportMain(args)
	default:
		err = fmt.Errorf("unknown mode %q: use setup, serve-knet, incluster, wait or report", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

func client(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s (is the cluster up?): %w", kubeconfig, err)
	}
	return kubernetes.NewForConfig(rc)
}

// setupMain creates the fixture and writes the two dnsperf query files:
// cluster.txt (names of the fixture's Services, ports and endpoints: A and
// SRV) and external.txt (external names as a pod's resolver expands them
// through its search path first: NXDOMAIN inside the cluster zone).
func setupMain(args []string) error {
	fs := flag.NewFlagSet("setup", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig of the cluster")
	ns := fs.String("namespace", "dnsbench", "API namespace for the fixture (recreated)")
	out := fs.String("out", "", "directory for cluster.txt and external.txt")
	_ = fs.Parse(args)
	if *kubeconfig == "" || *out == "" {
		return errors.New("setup needs --kubeconfig and --out")
	}
	c, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fx := dnsdiff.NewFixture(*ns)
	if err := fx.Apply(ctx, c); err != nil {
		return err
	}
	cluster, external := queryFiles(fx, "cluster.local.")
	if err := os.WriteFile(filepath.Join(*out, "cluster.txt"), []byte(cluster), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "external.txt"), []byte(external), 0o644)
}

// queryFiles renders dnsperf input ("name type" lines). The cluster set
// holds only names with records (Services with a ClusterIP or a ready
// endpoint, ready endpoints' hostnames), as a healthy cluster's clients ask.
func queryFiles(fx *dnsdiff.Fixture, zone string) (cluster, external string) {
	var b strings.Builder
	line := func(name, typ string) { fmt.Fprintf(&b, "%s %s\n", name, typ) }
	svcName := func(s string) string { return s + "." + fx.Namespace + ".svc." + zone }
	readyHosts := map[string][]string{} // Service -> ready endpoints' hostnames ("" for none)
	for _, es := range fx.Slices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			host := ""
			if e.Hostname != nil && es.AddressType == discoveryv1.AddressTypeIPv4 {
				host = *e.Hostname
			}
			readyHosts[svc] = append(readyHosts[svc], host)
		}
	}
	for _, s := range fx.Services {
		if s.Spec.Type == v1.ServiceTypeExternalName || (s.Spec.ClusterIP == v1.ClusterIPNone && len(readyHosts[s.Name]) == 0) {
			continue
		}
		line(svcName(s.Name), "A")
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				line("_"+p.Name+"._"+strings.ToLower(string(p.Protocol))+"."+svcName(s.Name), "SRV")
			}
		}
		for _, h := range readyHosts[s.Name] {
			if h != "" {
				line(h+"."+svcName(s.Name), "A")
			}
		}
	}
	line("kubernetes.default.svc."+zone, "A")
	line("_https._tcp.kubernetes.default.svc."+zone, "SRV")
	cluster = b.String()

	b.Reset()
	for _, ext := range []string{"example.com", "www.google.com", "github.com", "api.stripe.com",
		"s3.amazonaws.com", "registry.npmjs.org", "pypi.org", "login.microsoftonline.com"} {
		for _, suffix := range []string{fx.Namespace + ".svc." + zone, "svc." + zone, zone} {
			line(ext+"."+suffix, "A")
			line(ext+"."+suffix, "AAAA")
		}
	}
	return cluster, b.String()
}

// serveMain runs knet's DNS server exactly as `knet dns` does, except that
// the client comes from a kubeconfig.
func serveMain(args []string) error {
	fs := flag.NewFlagSet("serve-knet", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig of the cluster")
	var cfg knetdns.Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:5301", "DNS address (UDP and TCP)")
	fs.StringVar(&cfg.HealthListen, "health-listen", "127.0.0.1:18081", "HTTP address for /healthz and /readyz")
	_ = fs.Parse(args)
	var err error
	if cfg.Source, err = knetdns.NewSourceFromKubeconfig(*kubeconfig); err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := knetdns.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return s.Run(ctx)
}

// inClusterMain writes what rest.InClusterConfig reads, so that the real
// `knet dns` binary can run on the host: a token of the knet-dns add-on's
// ServiceAccount (kube-system/knet-dns, with exactly its RBAC) and the API
// server's CA, into --dir; it prints the API server's host and port for
// KUBERNETES_SERVICE_HOST and _PORT. run.sh mounts --dir over the
// ServiceAccount path in a private mount namespace.
func inClusterMain(args []string) error {
	fs := flag.NewFlagSet("incluster", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig of the cluster")
	dir := fs.String("dir", "", "directory for token and ca.crt")
	_ = fs.Parse(args)
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", *kubeconfig, err)
	}
	u, err := url.Parse(rc.Host)
	if err != nil || u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("kubeconfig server %q is not https://host:port", rc.Host)
	}
	ca := rc.TLSClientConfig.CAData
	if len(ca) == 0 && rc.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(rc.TLSClientConfig.CAFile); err != nil {
			return err
		}
	}
	if len(ca) == 0 {
		return errors.New("kubeconfig has no certificate authority")
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	expiry := int64(3600)
	tr, err := c.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "knet-dns",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for kube-system/knet-dns (is the knet-dns add-on applied?): %w", err)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "token"), []byte(tr.Status.Token), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "ca.crt"), ca, 0o644); err != nil {
		return err
	}
	fmt.Println(u.Hostname(), u.Port())
	return nil
}

// waitMain polls a server until name A is answered with at least one record.
func waitMain(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	server := fs.String("server", "", "ip:port")
	name := fs.String("name", "", "name that must resolve")
	timeout := fs.Duration("timeout", time.Minute, "give up after")
	_ = fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	var last string
	for time.Now().Before(deadline) {
		m, err := dnsdiff.Exchange(*server, dnsdiff.Query{Name: dns.Fqdn(*name), Type: dns.TypeA}, time.Second)
		if err == nil && m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = dns.RcodeToString[m.Rcode]
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %s A within %s (last: %s)", *server, *name, *timeout, last)
}
