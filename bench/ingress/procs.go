package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procs are the processes this run started; stop ends exactly those, by PID.
type procs struct {
	dir  string
	list []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs argv pinned to cpu (taskset execs it, so the PID is the
// program's), with stdout and stderr in dir/name.log. Pdeathsig kills it if
// this process dies without cleaning up.
func (p *procs) start(name, cpu string, argv ...string) (*proc, error) {
	return p.startWith(name, cpu, nil, argv...)
}

// startWith is start with the child's stdout given to stdout (stderr still
// goes to the log).
func (p *procs) startWith(name, cpu string, stdout io.Writer, argv ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("taskset", append([]string{"-c", cpu}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	pr := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { pr.err = cmd.Wait(); close(pr.done) }()
	p.list = append(p.list, pr)
	return pr, nil
}

func (pr *proc) pid() int { return pr.cmd.Process.Pid }

func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// stopAll sends SIGTERM to each started process still running, waits up to
// 5s, then SIGKILLs it.
func (p *procs) stopAll() error {
	var errs []error
	for i := len(p.list) - 1; i >= 0; i-- {
		pr := p.list[i]
		if pr.exited() {
			continue
		}
		_ = pr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(5 * time.Second):
			_ = pr.cmd.Process.Kill()
			<-pr.done
			errs = append(errs, fmt.Errorf("%s (pid %d) ignored SIGTERM for 5s and was killed", pr.name, pr.pid()))
		}
	}
	return errors.Join(errs...)
}

// cpuTime is the user+system CPU time of a process (all its threads).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line, in clock ticks (USER_HZ=100).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// runQueueWait is the time the threads of a process spent runnable but
// waiting for a CPU (second field of /proc/PID/task/*/schedstat): how
// much the rest of the machine held the server back.
func runQueueWait(pid int) (time.Duration, error) {
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(files) == 0 {
		return 0, fmt.Errorf("no schedstat for pid %d (kernel without CONFIG_SCHEDSTATS?): %v", pid, err)
	}
	var sum time.Duration
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		if fs := strings.Fields(string(b)); len(fs) >= 2 {
			n, _ := strconv.ParseInt(fs[1], 10, 64)
			sum += time.Duration(n)
		}
	}
	return sum, nil
}

// onlineCPUs counts the machine's CPUs, whatever this process's affinity.
func onlineCPUs() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if len(l) > 3 && strings.HasPrefix(l, "cpu") && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return n
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// writeCert writes a self-signed ECDSA P-256 certificate for benchHost and
// 127.0.0.1 (wrk's SNI) as cert.pem, key.pem and bundle.pem (HAProxy's
// crt: certificate then key).
func writeCert(dir string) (certFile, keyFile, bundle string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: benchHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{benchHost}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	certFile, keyFile, bundle = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	for f, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, bundle: append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			return "", "", "", err
		}
	}
	return certFile, keyFile, bundle, nil
}

// readLine reads the first line a child prints, or fails after timeout.
func readLine(r io.Reader, timeout time.Duration) (string, error) {
	ch := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil {
			errc <- err
			return
		}
		ch <- strings.TrimSpace(line)
	}()
	select {
	case l := <-ch:
		return l, nil
	case err := <-errc:
		return "", err
	case <-time.After(timeout):
		return "", fmt.Errorf("no ready line after %s", timeout)
	}
}
