// Package sandbox is knet's process runtime for pods. A sandbox is a holder
// process (the "pause" role) that owns a pod's network, UTS, IPC and mount
// namespaces and its root filesystem: the host's root as the read-only lower
// layer of an overlay whose writes stay in the pod, with fresh /proc, /sys,
// /dev/shm and /tmp and the pod's files (/etc/hosts, ...) and mounts on top.
// A container is a host process started inside those namespaces, in its own
// copy of the pod's mount namespace, pivoted into the pod root.
//
// The package owns the processes it starts, the state directory Config.Dir
// and the mounts inside the pod's mount namespace. It never configures the
// pod's network beyond bringing up lo (that is CNI's job, through
// NetNSPath), never mounts anything in the caller's mount namespace, and
// never signals a process it did not start.
//
// The binary named by Config.HelperBinary must dispatch the subcommands
// "sandbox-holder" and "container-init" to HolderMain and ContainerInitMain
// before doing anything else.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Sandbox is a running pod sandbox. Its methods are safe for concurrent use.
type Sandbox struct {
	cfg        Config
	log        *slog.Logger
	holder     *exec.Cmd
	holderDone chan struct{} // closed when the holder has exited and been reaped

	mu         sync.Mutex
	removed    bool
	containers map[*Container]struct{} // started and not yet reaped
	execs      map[*os.Process]struct{}
}

// Layout of Config.Dir.
const (
	holderSpecFile = "holder.json"
	holderLogFile  = "holder.log" // the holder's stderr
	filesDir       = "files"      // Config.Files, bind-mounted into the pod root
	rootfsDir      = "rootfs"     // mount point of the pod root (in the pod's mount namespace only)
	scratchDir     = "scratch"    // mount point of the tmpfs with the overlay's upper layer
	containersDir  = "containers" // container-init specs
)

// Start creates cfg.Dir, starts the holder and returns once the pod's
// namespaces and root filesystem are ready, or ctx is done.
func Start(ctx context.Context, cfg Config) (*Sandbox, error) {
	if err := cfg.Defaults(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	begin := time.Now()
	s := &Sandbox{
		cfg:        cfg,
		log:        cfg.Logger.With("sandbox", cfg.ID),
		holderDone: make(chan struct{}),
		containers: map[*Container]struct{}{},
		execs:      map[*os.Process]struct{}{},
	}
	success := false
	defer func() {
		if !success {
			if err := s.Remove(); err != nil {
				s.log.Error("clean up after failed start", "err", err)
			}
		}
	}()
	spec, err := s.writeState()
	if err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", cfg.ID, err)
	}
	if err := s.startHolder(ctx, spec); err != nil {
		return nil, fmt.Errorf("start sandbox %s: %w", cfg.ID, err)
	}
	success = true
	s.log.Info("sandbox ready", "pid", s.HolderPID(), "hostNetwork", cfg.HostNetwork, "duration", time.Since(begin))
	return s, nil
}

// writeState creates Dir with the pod's files and returns the holder's spec.
func (s *Sandbox) writeState() (holderSpec, error) {
	dir := s.cfg.Dir
	spec := holderSpec{
		Hostname:    s.cfg.Hostname,
		HostNetwork: s.cfg.HostNetwork,
		Rootfs:      filepath.Join(dir, rootfsDir),
		Scratch:     filepath.Join(dir, scratchDir),
		// The pod root shows the whole host root; hide our own state (the
		// container specs carry their environment) from the pod.
		Masked: []string{dir},
	}
	for _, d := range []string{dir, spec.Rootfs, spec.Scratch, filepath.Join(dir, filesDir), filepath.Join(dir, containersDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return spec, fmt.Errorf("create state directory: %w", err)
		}
	}
	for i, f := range s.cfg.Files {
		src := filepath.Join(dir, filesDir, fmt.Sprintf("%d-%s", i, filepath.Base(f.Path)))
		if err := os.WriteFile(src, f.Data, f.Mode); err != nil {
			return spec, fmt.Errorf("write pod file %s: %w", f.Path, err)
		}
		// WriteFile's mode is filtered by the umask; the pod must see Mode.
		if err := os.Chmod(src, f.Mode); err != nil {
			return spec, fmt.Errorf("write pod file %s: %w", f.Path, err)
		}
		spec.Mounts = append(spec.Mounts, Mount{Source: src, Target: f.Path})
	}
	spec.Mounts = append(spec.Mounts, s.cfg.Mounts...)
	return spec, writeJSON(filepath.Join(dir, holderSpecFile), spec)
}

func (s *Sandbox) startHolder(ctx context.Context, spec holderSpec) error {
	logFile, err := os.OpenFile(filepath.Join(s.cfg.Dir, holderLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open holder log: %w", err)
	}
	defer logFile.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create readiness pipe: %w", err)
	}
	defer readyR.Close()

	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if !s.cfg.HostNetwork {
		flags |= unix.CLONE_NEWNET
	}
	cmd := exec.Command(s.cfg.HelperBinary, "sandbox-holder", filepath.Join(s.cfg.Dir, holderSpecFile))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: flags,
		Setsid:     true, // no terminal signals from the caller's session
		// Pods must not outlive a crashed kubelet (it re-creates them).
		Pdeathsig: syscall.SIGKILL,
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		close(s.holderDone)
		return fmt.Errorf("run holder %s: %w", s.cfg.HelperBinary, err)
	}
	s.holder = cmd
	go func() {
		cmd.Wait()
		close(s.holderDone)
	}()

	// The holder writes one byte when ready, or an error message, and closes.
	msg := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(readyR)
		msg <- b
	}()
	select {
	case <-ctx.Done():
		return fmt.Errorf("wait for holder: %w", ctx.Err())
	case b := <-msg:
		if len(b) == 1 && b[0] == holderReady {
			return nil
		}
		if len(b) > 0 {
			return errors.New(string(b))
		}
		<-s.holderDone
		return fmt.Errorf("holder exited before it was ready (%v); see %s", cmd.ProcessState, filepath.Join(s.cfg.Dir, holderLogFile))
	}
}

// HolderPID is the PID of the holder process.
func (s *Sandbox) HolderPID() int { return s.holder.Process.Pid }

// NetNSPath names the pod's network namespace, usable as CNI_NETNS while the
// holder lives. With HostNetwork it is the caller's own namespace.
func (s *Sandbox) NetNSPath() string { return fmt.Sprintf("/proc/%d/ns/net", s.HolderPID()) }

// ptmxPath reaches the pod's devpts through the holder's mount namespace.
func (s *Sandbox) ptmxPath() string {
	return filepath.Join("/proc", strconv.Itoa(s.HolderPID()), "root", s.cfg.Dir, rootfsDir, "dev/pts/ptmx")
}

// Alive reports whether the holder is still running; false after Remove or
// when something else killed it (the pod must then be re-created).
func (s *Sandbox) Alive() bool {
	select {
	case <-s.holderDone:
		return false
	default:
		return true
	}
}

// Dial connects from inside the pod's network namespace (the kubelet's
// port-forward). The host part of address must be an IP address or
// "localhost": names are not resolved, since the host's resolver is not the
// pod's.
func (s *Sandbox) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	if s.cfg.HostNetwork {
		return d.DialContext(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s in sandbox %s: %w", address, s.cfg.ID, err)
	}
	ips := []string{host}
	if host == "localhost" {
		ips = []string{"127.0.0.1", "::1"}
	} else if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("dial %s in sandbox %s: host must be an IP address or localhost", address, s.cfg.ID)
	}
	if !s.Alive() {
		return nil, fmt.Errorf("dial %s in sandbox %s: holder is not running; re-create the sandbox", address, s.cfg.ID)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	// The socket is created on a thread switched into the pod's netns and
	// stays there; the thread goes back (or dies, see inNetNS).
	go func() {
		var r result
		err := s.inNetNS(func() {
			for _, ip := range ips {
				// One literal address: the dialer creates the socket on this
				// goroutine, hence on this thread, hence in the pod's netns.
				if r.conn, r.err = d.DialContext(ctx, network, net.JoinHostPort(ip, port)); r.err == nil {
					return
				}
			}
		})
		if err != nil {
			r.err = err
		}
		done <- r
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("dial %s in sandbox %s: %w", address, s.cfg.ID, r.err)
	}
	return r.conn, nil
}

// inNetNS runs fn on a locked OS thread inside the pod's network namespace.
func (s *Sandbox) inNetNS(fn func()) error {
	runtime.LockOSThread()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer own.Close()
	pod, err := os.Open(s.NetNSPath())
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open pod network namespace: %w", err)
	}
	defer pod.Close()
	if err := unix.Setns(int(pod.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter pod network namespace: %w", err)
	}
	fn()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: Go destroys it when this goroutine ends,
		// instead of reusing a thread stuck in the pod's namespace.
		s.log.Error("return thread from pod network namespace; dropping the thread", "err", err)
		return nil
	}
	runtime.UnlockOSThread()
	return nil
}

// Remove kills every process of the sandbox (containers, execs, holder),
// waits for them, and removes Dir. It is idempotent.
func (s *Sandbox) Remove() error {
	s.mu.Lock()
	s.removed = true
	containers := make([]*Container, 0, len(s.containers))
	for c := range s.containers {
		containers = append(containers, c)
	}
	execs := make([]*os.Process, 0, len(s.execs))
	for p := range s.execs {
		execs = append(execs, p)
	}
	s.mu.Unlock()

	for _, c := range containers {
		c.Signal(syscall.SIGKILL)
	}
	for _, p := range execs {
		p.Kill()
	}
	for _, c := range containers {
		<-c.done
	}
	if s.holder != nil {
		s.holder.Process.Kill()
		<-s.holderDone
	}

	// The pod's mounts die with its mount namespace and never show here. If
	// one did leak, RemoveAll would delete through it into a host directory,
	// so detach leaks first and refuse to delete if that fails.
	if err := detachMountsUnder(s.cfg.Dir); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", s.cfg.ID, err)
	}
	if err := os.RemoveAll(s.cfg.Dir); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", s.cfg.ID, err)
	}
	s.log.Info("sandbox removed")
	return nil
}

func detachMountsUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("list mounts under %s: %w", dir, err)
	}
	// Deepest first, so each unmount finds its children already gone.
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int {
		return strings.Count(b.Mountpoint, "/") - strings.Count(a.Mountpoint, "/")
	})
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount leaked %s: %w", m.Mountpoint, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w; not deleting %s, unmount by hand and retry", err, dir)
	}
	return nil
}
