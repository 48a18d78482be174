package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	agnhost, haproxy, wrk string
	duration              time.Duration
	threads, conns        int
	rounds                int
	latencyReps           int
	changes               int
	changeInterval        time.Duration
	proxyCPU, clientCPU   string
	profile               string
	keep                  bool
}

func runMain(args []string) error {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.agnhost, "agnhost", "bin/agnhost", "agnhost binary (bash hack/build.sh builds it)")
	fs.StringVar(&o.haproxy, "haproxy", "haproxy", "HAProxy 2.6 binary (apt-get install haproxy; its service stays off)")
	fs.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	fs.DurationVar(&o.duration, "duration", 6*time.Second, "duration of each wrk throughput run")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads")
	fs.IntVar(&o.conns, "connections", 32, "wrk connections")
	fs.IntVar(&o.rounds, "rounds", 3, "throughput rounds (targets interleaved, order rotated; the table shows medians)")
	fs.IntVar(&o.latencyReps, "latency-reps", 20, "Ingress changes timed to their first 200")
	fs.IntVar(&o.changes, "changes", 100, "Ingress changes under wrk load")
	fs.DurationVar(&o.changeInterval, "change-interval", 50*time.Millisecond, "pause between Ingress changes under load")
	fs.StringVar(&o.proxyCPU, "proxy-cpu", "1", "CPU the proxy under test is pinned to")
	fs.StringVar(&o.clientCPU, "client-cpu", "0", "CPU wrk and the backends are pinned to")
	fs.StringVar(&o.profile, "profile", "auto", "CPU-profile knet under wrk: auto (when below a goal), always or never")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, haproxy.cfg, profiles)")
	_ = fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "knet-ingbench-")
	if err != nil {
		return err
	}
	b := &bench{o: o, dir: dir, procs: &procs{dir: dir}}
	err = b.setup(ctx)
	if err == nil {
		err = b.measure(ctx)
	}
	if serr := b.procs.stopAll(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("%w (logs kept in %s)", err, dir)
	}
	b.report(os.Stdout)
	if o.keep || b.profiled {
		fmt.Printf("\nwork directory (logs, haproxy.cfg, profiles): %s\n", dir)
		return nil
	}
	return os.RemoveAll(dir)
}

// target is one server wrk measures; pids are the processes whose CPU time
// is counted (the proxy, or the backend itself for "direct").
type target struct {
	name                string
	httpAddr, httpsAddr string
	httpPID, httpsPID   int
}

type bench struct {
	o        options
	dir      string
	procs    *procs
	certDER  []byte
	roots    *x509.CertPool
	targets  []*target // direct, haproxy, knet
	knetCtl  string
	haproxyV string
	runs     map[string][]run // "target/proto" -> one per round
	latIdle  []time.Duration
	latLoad  []time.Duration
	churn    wrkResult
	churnOK  bool
	profiled bool
	profiles []string
}

// run is one wrk measurement plus the CPU the server under test used.
type run struct {
	wrkResult
	cpu float64 // cores busy, 1.0 = one core saturated
	// wait is the time the server's threads waited for a CPU, per second.
	wait float64
}

func (b *bench) setup(ctx context.Context) error {
	o := b.o
	for _, bin := range []string{o.agnhost, o.haproxy, o.wrk, "taskset", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: %w (run bench/ingress/run.sh, which builds agnhost; apt-get install -y haproxy wrk)", bin, err)
		}
	}
	v, err := exec.Command(o.haproxy, "-v").Output()
	if err != nil {
		return fmt.Errorf("haproxy -v: %w", err)
	}
	b.haproxyV, _, _ = strings.Cut(strings.Fields(string(v))[2], "-") // "2.6.12-1+deb12u4" -> "2.6.12"
	if !strings.HasPrefix(b.haproxyV, "2.6") {
		fmt.Fprintf(os.Stderr, "warning: HAProxy %s, the comparison is meant against 2.6\n", b.haproxyV)
	}
	certFile, keyFile, bundle, err := writeCert(b.dir)
	if err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	certPEM, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(certPEM)
	b.certDER = blk.Bytes
	leaf, err := x509.ParseCertificate(b.certDER)
	if err != nil {
		return err
	}
	b.roots = x509.NewCertPool()
	b.roots.AddCert(leaf)

	// Backends of both proxies share the client core, so that the proxy's
	// core runs the proxy alone. The "direct" servers run on the proxy core,
	// as the server under test.
	ports := make([]int, 6)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	var backends []string
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i])
		if _, err := b.procs.start(fmt.Sprintf("backend%d", i), o.clientCPU, o.agnhost, "netexec",
			fmt.Sprintf("--http-port=%d", ports[i]), "--udp-port=-1"); err != nil {
			return err
		}
		backends = append(backends, addr)
	}
	directHTTP, err := b.procs.start("direct-http", o.proxyCPU, o.agnhost, "netexec", fmt.Sprintf("--http-port=%d", ports[2]), "--udp-port=-1")
	if err != nil {
		return err
	}
	directTLS, err := b.procs.start("direct-tls", o.proxyCPU, o.agnhost, "netexec", fmt.Sprintf("--http-port=%d", ports[3]), "--udp-port=-1",
		"--tls-cert-file="+certFile, "--tls-private-key-file="+keyFile)
	if err != nil {
		return err
	}
	direct := &target{name: "backend direct", httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[2]), httpsAddr: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		httpPID: directHTTP.pid(), httpsPID: directTLS.pid()}

	cfg := haproxyConfig{HTTPPort: ports[4], HTTPSPort: ports[5], CertBundle: bundle, Backends: backends}
	cfgPath := filepath.Join(b.dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg.render()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command(o.haproxy, "-c", "-f", cfgPath).CombinedOutput(); err != nil {
		return fmt.Errorf("haproxy rejects %s: %w\n%s", cfgPath, err, out)
	}
	hp, err := b.procs.start("haproxy", o.proxyCPU, o.haproxy, "-db", "-f", cfgPath)
	if err != nil {
		return err
	}
	haproxy := &target{name: "HAProxy " + b.haproxyV, httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[4]),
		httpsAddr: fmt.Sprintf("127.0.0.1:%d", ports[5]), httpPID: hp.pid(), httpsPID: hp.pid()}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	kp, err := b.procs.startWith("knet", o.proxyCPU, pw, self, "knet", "--backends", strings.Join(backends, ","), "--cert", certFile, "--key", keyFile)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	line, err := readLine(pr, 30*time.Second)
	if err != nil {
		return fmt.Errorf("knet child: %w (see knet.log)", err)
	}
	go io.Copy(io.Discard, pr)
	var ka knetAddrs
	if err := json.Unmarshal([]byte(line), &ka); err != nil {
		return fmt.Errorf("knet child ready line %q: %w", line, err)
	}
	b.knetCtl = ka.Control
	knet := &target{name: "knet", httpAddr: ka.HTTP, httpsAddr: ka.HTTPS, httpPID: kp.pid(), httpsPID: kp.pid()}
	b.targets = []*target{direct, haproxy, knet}

	// Everything answers the bench request with 200 before measuring, and
	// the proxies serve 404 off the route (so the routes are really used).
	for _, addr := range backends {
		if err := b.waitOK(ctx, "backend "+addr, "http", addr, benchPath); err != nil {
			return err
		}
	}
	for _, t := range b.targets {
		if err := b.waitOK(ctx, t.name+" HTTP", "http", t.httpAddr, benchPath); err != nil {
			return err
		}
		if err := b.waitOK(ctx, t.name+" TLS", "https", t.httpsAddr, benchPath); err != nil {
			return err
		}
		if t == direct {
			continue
		}
		if code, err := b.get(ctx, b.client("http", t.httpAddr), "http", "/hostnamex"); err != nil || code != 404 {
			return fmt.Errorf("%s: GET /hostnamex = %d, %v; want 404 (the route must be Prefix /hostname only)", t.name, code, err)
		}
		// wrk sends SNI "127.0.0.1": both proxies must present the bench
		// certificate for it, so both pay for the same key.
		if err := b.checkCert(ctx, t.httpsAddr, "127.0.0.1"); err != nil {
			return fmt.Errorf("%s TLS: %w", t.name, err)
		}
	}
	return nil
}

// client is a keep-alive client whose connections go to addr whatever the
// URL, trusting the bench certificate.
func (b *bench) client(scheme, addr string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: b.roots, ServerName: benchHost},
		MaxIdleConnsPerHost: 4,
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (b *bench) get(ctx context.Context, c *http.Client, scheme, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+benchHost+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (b *bench) waitOK(ctx context.Context, what, scheme, addr, path string) error {
	c := b.client(scheme, addr)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, err := b.get(ctx, c, scheme, path)
		if err == nil && code == 200 {
			return nil
		}
		for _, pr := range b.procs.list {
			if pr.exited() {
				return fmt.Errorf("%s exited (%v) while waiting for %s; see %s.log", pr.name, pr.err, what, pr.name)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s never answered %s %s with 200 (last: %d, %v); see the logs", what, scheme, path, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkCert asks openssl for the certificate addr presents to SNI name.
func (b *bench) checkCert(ctx context.Context, addr, sni string) error {
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-servername", sni)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.Output()
	start := bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----"))
	if start < 0 {
		return fmt.Errorf("openssl s_client -servername %s printed no certificate", sni)
	}
	blk, _ := pem.Decode(out[start:])
	if blk == nil || !bytes.Equal(blk.Bytes, b.certDER) {
		return fmt.Errorf("certificate presented for SNI %s is not the bench certificate", sni)
	}
	return nil
}

// wrk runs wrk pinned to the client core against scheme://addr+path.
func (b *bench) wrk(ctx context.Context, scheme, addr, path string, d time.Duration, script string) (wrkResult, error) {
	return b.wrkUntil(ctx, scheme, addr, path, d, script, nil)
}

// wrkUntil is wrk that, when stop is closed first, ends early with SIGINT
// (on which wrk stops and prints its report).
func (b *bench) wrkUntil(ctx context.Context, scheme, addr, path string, d time.Duration, script string, stop <-chan struct{}) (wrkResult, error) {
	args := []string{"-c", b.o.clientCPU, b.o.wrk, fmt.Sprintf("-t%d", b.o.threads), fmt.Sprintf("-c%d", b.o.conns),
		fmt.Sprintf("-d%ds", int(d.Round(time.Second).Seconds())), "--latency", "-H", "Host: " + benchHost}
	if script != "" {
		f := filepath.Join(b.dir, "count.lua")
		if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
			return wrkResult{}, err
		}
		args = append(args, "-s", f)
	}
	args = append(args, scheme+"://"+addr+path)
	cmd := exec.CommandContext(ctx, "taskset", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return wrkResult{}, fmt.Errorf("start wrk: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-stop:
		_ = cmd.Process.Signal(syscall.SIGINT)
		err = <-waited
	}
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s://%s: %w\n%s", scheme, addr, err, out.String())
	}
	return parseWrk(out.String())
}

// measured runs wrk and the CPU time pid used meanwhile.
func (b *bench) measured(ctx context.Context, scheme, addr string, pid int) (run, error) {
	c0, err := cpuTime(pid)
	if err != nil {
		return run{}, err
	}
	w0, _ := runQueueWait(pid)
	t0 := time.Now()
	r, err := b.wrk(ctx, scheme, addr, benchPath, b.o.duration, "")
	if err != nil {
		return run{}, err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return run{}, err
	}
	w1, _ := runQueueWait(pid)
	wall := float64(time.Since(t0))
	return run{wrkResult: r, cpu: float64(c1-c0) / wall, wait: float64(w1-w0) / wall}, nil
}

func (b *bench) measure(ctx context.Context) error {
	b.runs = map[string][]run{}
	// Warm up each server (connection pools, TLS session state, Go heap).
	for _, t := range b.targets {
		for _, s := range []struct{ scheme, addr string }{{"http", t.httpAddr}, {"https", t.httpsAddr}} {
			if _, err := b.wrk(ctx, s.scheme, s.addr, benchPath, 2*time.Second, ""); err != nil {
				return err
			}
		}
	}
	for round := range b.o.rounds {
		for i := range b.targets {
			t := b.targets[(i+round)%len(b.targets)]
			for _, s := range []struct {
				scheme, addr string
				pid          int
			}{{"http", t.httpAddr, t.httpPID}, {"https", t.httpsAddr, t.httpsPID}} {
				r, err := b.measured(ctx, s.scheme, s.addr, s.pid)
				if err != nil {
					return fmt.Errorf("%s %s: %w", t.name, s.scheme, err)
				}
				fmt.Fprintf(os.Stderr, "round %d %-16s %-5s %9.0f req/s p50 %-9v p99 %-9v cpu %.2f runq-wait %.2f non2xx %d errors %d\n",
					round+1, t.name, s.scheme, r.ReqPerSec, r.P50, r.P99, r.cpu, r.wait, r.Non2xx, r.SocketErrors)
				key := t.name + "/" + s.scheme
				b.runs[key] = append(b.runs[key], r)
			}
		}
	}

	knet := b.targets[2]
	var err error
	if b.latIdle, err = b.changeLatency(ctx, knet, "idle", false); err != nil {
		return err
	}
	if b.latLoad, err = b.changeLatency(ctx, knet, "load", true); err != nil {
		return err
	}
	if err := b.churnUnderLoad(ctx, knet); err != nil {
		return err
	}
	if b.o.profile == "always" || (b.o.profile == "auto" && !b.goalsMet()) {
		return b.profileKnet(ctx, knet)
	}
	return nil
}

// change asks the knet child to change the Ingress and returns when the
// update started.
func (b *bench) change(ctx context.Context, query string) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.knetCtl+"/change?"+query, nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("change Ingress (%s): %w", query, err)
	}
	defer resp.Body.Close()
	var r changeReply
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		return time.Time{}, fmt.Errorf("change Ingress (%s): %s: %s", query, resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, r.StartUnixNano), nil
}

// changeLatency adds a new path latencyReps times and measures, polling
// every 1ms, the time from the update to the first 200 on that path. With
// load, wrk keeps the proxy busy meanwhile.
func (b *bench) changeLatency(ctx context.Context, t *target, tag string, load bool) ([]time.Duration, error) {
	c := b.client("http", t.httpAddr)
	defer c.CloseIdleConnections()
	var wrkDone chan error
	if load {
		// Long enough for all repetitions; the result is not reported.
		d := time.Duration(b.o.latencyReps)*400*time.Millisecond + 3*time.Second
		wrkDone = make(chan error, 1)
		go func() { _, err := b.wrk(ctx, "http", t.httpAddr, benchPath, d, ""); wrkDone <- err }()
		time.Sleep(time.Second)
	}
	var lats []time.Duration
	for i := range b.o.latencyReps {
		path := fmt.Sprintf("/lat-%s-%d", tag, i)
		if code, err := b.get(ctx, c, "http", path); err != nil || code != 404 {
			return nil, fmt.Errorf("before adding %s: GET = %d, %v; want 404", path, code, err)
		}
		start, err := b.change(ctx, "add="+path)
		if err != nil {
			return nil, err
		}
		tick := time.NewTicker(time.Millisecond)
		for {
			code, err := b.get(ctx, c, "http", path)
			if err != nil {
				tick.Stop()
				return nil, fmt.Errorf("poll %s: %w", path, err)
			}
			if code == 200 {
				lats = append(lats, time.Since(start))
				break
			}
			if time.Since(start) > 10*time.Second {
				tick.Stop()
				return nil, fmt.Errorf("%s not served 10s after the Ingress update (last status %d)", path, code)
			}
			<-tick.C
		}
		tick.Stop()
		// Let the controller go idle (its MinSyncInterval is 100ms) so each
		// repetition times one isolated change.
		time.Sleep(300 * time.Millisecond)
	}
	if load {
		if err := <-wrkDone; err != nil {
			return nil, err
		}
	}
	return lats, nil
}

// churnUnderLoad changes the Ingress b.o.changes times while wrk loads the
// bench route: each change moves the route to the other Service (same
// endpoints) and adds a path. Every non-2xx response and socket error is a
// failed request.
func (b *bench) churnUnderLoad(ctx context.Context, t *target) error {
	// wrk runs until the changes are done plus a second (SIGINT), however
	// slow the control calls are on a busy machine.
	stop := make(chan struct{})
	wrkDone := make(chan error, 1)
	go func() {
		var err error
		b.churn, err = b.wrkUntil(ctx, "http", t.httpAddr, benchPath, time.Hour, countScript, stop)
		wrkDone <- err
	}()
	time.Sleep(time.Second)
	var err error
	for i := range b.o.changes {
		if _, err = b.change(ctx, fmt.Sprintf("flip=1&add=/churn-%d", i)); err != nil {
			break
		}
		time.Sleep(b.o.changeInterval)
	}
	time.Sleep(time.Second)
	close(stop)
	if werr := <-wrkDone; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	// The last change must have taken effect, or the churn was not real.
	c := b.client("http", t.httpAddr)
	defer c.CloseIdleConnections()
	code, err := b.get(ctx, c, "http", fmt.Sprintf("/churn-%d", b.o.changes-1))
	b.churnOK = err == nil && code == 200
	return nil
}

// profileKnet records a CPU profile of the knet child during a wrk run,
// once for HTTP and once for TLS.
func (b *bench) profileKnet(ctx context.Context, t *target) error {
	b.profiled = true
	for _, s := range []struct{ scheme, addr string }{{"http", t.httpAddr}, {"https", t.httpsAddr}} {
		secs := int(b.o.duration.Seconds()) - 2
		if secs < 1 {
			secs = 1
		}
		wrkDone := make(chan error, 1)
		go func() { _, err := b.wrk(ctx, s.scheme, s.addr, benchPath, b.o.duration, ""); wrkDone <- err }()
		time.Sleep(time.Second)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", b.knetCtl, secs)
		resp, err := http.Get(url)
		if err != nil {
			return fmt.Errorf("fetch knet CPU profile: %w", err)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("fetch knet CPU profile: %s %v", resp.Status, err)
		}
		f := filepath.Join(b.dir, "knet-"+s.scheme+".pprof")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			return err
		}
		b.profiles = append(b.profiles, f)
		if err := <-wrkDone; err != nil {
			return err
		}
	}
	return nil
}

// pprofTop is `go tool pprof -top` of a profile, or why it failed.
func pprofTop(file string, cum bool, n int) string {
	args := []string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(n)}
	if cum {
		args = append(args, "-cum")
	}
	out, err := exec.Command("go", append(args, file)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof %s: %v\n%s", file, err, out)
	}
	return string(out)
}
