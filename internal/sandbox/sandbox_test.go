package sandbox_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"knet/internal/sandbox"
)

// The test binary is its own HelperBinary: Start and StartContainer re-exec
// it with these subcommands.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "sandbox-holder":
			os.Exit(sandbox.HolderMain(os.Args[2:]))
		case "container-init":
			os.Exit(sandbox.ContainerInitMain(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

// helperEnv names a HelperBinary to use instead of the test binary, e.g. to
// measure the knet binary or internal/sandbox/helper in the benchmarks.
const helperEnv = "KNET_SANDBOX_HELPER"

func requirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates namespaces and mounts")
	}
	for _, bin := range []string{"nsenter", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("needs util-linux %s: %v", bin, err)
		}
	}
}

func randomSuffix(tb testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startPod starts a sandbox under a fresh temp dir and removes it when the test ends.
func startPod(tb testing.TB, cfg sandbox.Config) *sandbox.Sandbox {
	tb.Helper()
	requirePrivileges(tb)
	if cfg.ID == "" {
		cfg.ID = "knettest-sandbox-" + randomSuffix(tb)
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(tb.TempDir(), "pod")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.HelperBinary = os.Getenv(helperEnv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sb, err := sandbox.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := sb.Remove(); err != nil {
			tb.Errorf("Remove: %v", err)
		}
	})
	return sb
}

// startContainer starts a container and kills it when the test ends.
func startContainer(tb testing.TB, sb *sandbox.Sandbox, cfg sandbox.ContainerConfig) *sandbox.Container {
	tb.Helper()
	if cfg.Name == "" {
		cfg.Name = "c-" + randomSuffix(tb)
	}
	if cfg.Env == nil {
		cfg.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	}
	c, err := sb.StartContainer(cfg)
	if err != nil {
		tb.Fatalf("StartContainer %s: %v", cfg.Name, err)
	}
	tb.Cleanup(func() {
		c.Signal(syscall.SIGKILL)
		<-c.Done()
	})
	return c
}

func sleeper(tb testing.TB, sb *sandbox.Sandbox, mounts ...sandbox.Mount) *sandbox.Container {
	return startContainer(tb, sb, sandbox.ContainerConfig{Args: []string{"sleep", "1000"}, Mounts: mounts})
}

// run execs args in c and returns stdout, stderr and the exit code.
func run(t *testing.T, c *sandbox.Container, args ...string) (string, string, int) {
	t.Helper()
	return runEnv(t, c, nil, args...)
}

func runEnv(t *testing.T, c *sandbox.Container, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(ctx, sandbox.ExecConfig{Args: args, Env: env, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("Exec %q: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// mustRun execs args and fails the test unless they exit 0.
func mustRun(t *testing.T, c *sandbox.Container, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, c, args...)
	if code != 0 {
		t.Fatalf("Exec %q: exit code %d, stderr %q", args, code, errOut)
	}
	return strings.TrimSpace(out)
}

func waitDone(t *testing.T, c *sandbox.Container) sandbox.ExitStatus {
	t.Helper()
	select {
	case <-c.Done():
		return c.ExitStatus()
	case <-time.After(30 * time.Second):
		t.Fatal("container did not exit within 30s")
		return sandbox.ExitStatus{}
	}
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, m := range infos {
		points = append(points, m.Mountpoint)
	}
	return points
}

func TestPodRootIsolatesHostnameFilesAndWrites(t *testing.T) {
	hostHostsBefore, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	hosts := "# knet test\n127.0.0.1\tlocalhost\n10.244.1.7\tweb-0." + randomSuffix(t) + "\n"
	dir := filepath.Join(t.TempDir(), "pod")
	sb := startPod(t, sandbox.Config{
		Dir:      dir,
		Hostname: "web-0",
		Files:    []sandbox.File{{Path: "/etc/hosts", Data: []byte(hosts)}},
	})
	c := sleeper(t, sb)

	if got := mustRun(t, c, "hostname"); got != "web-0" {
		t.Errorf("hostname inside the pod = %q, want web-0", got)
	}
	if host, _ := os.Hostname(); host == "web-0" {
		t.Errorf("the host's hostname changed to the pod's")
	}
	if got := mustRun(t, c, "cat", "/etc/hosts"); got != strings.TrimSpace(hosts) {
		t.Errorf("/etc/hosts inside the pod = %q, want %q", got, hosts)
	}
	if after, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(after, hostHostsBefore) {
		t.Errorf("host /etc/hosts changed: %q", after)
	}

	for _, p := range []string{"/tmp/knet-sandbox-test-" + randomSuffix(t), "/etc/knet-sandbox-test-" + randomSuffix(t)} {
		mustRun(t, c, "sh", "-c", "echo pod-data > "+p)
		if got := mustRun(t, c, "cat", p); got != "pod-data" {
			t.Errorf("%s inside the pod = %q, want pod-data", p, got)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("file %s written in the pod is visible on the host (stat: %v)", p, err)
			os.Remove(p)
		}
	}
	// The pod's state (container specs hold their environment) is hidden from it.
	if out, _, _ := run(t, c, "ls", "-A", dir); strings.TrimSpace(out) != "" {
		t.Errorf("the sandbox's state dir is visible inside the pod: %q", out)
	}
	if points := mountsUnder(t, dir); len(points) > 0 {
		t.Errorf("the pod's mounts leak into the caller's mount namespace: %v", points)
	}
	// A minimal /dev: the usual nodes, no host disks.
	want := map[string]bool{"null": true, "zero": true, "full": true, "random": true, "urandom": true, "tty": true,
		"pts": true, "ptmx": true, "shm": true, "mqueue": true, "fd": true, "stdin": true, "stdout": true, "stderr": true}
	for _, name := range strings.Fields(mustRun(t, c, "ls", "-A", "/dev")) {
		if !want[name] {
			t.Errorf("/dev/%s exists inside the pod; want only the usual device nodes", name)
		}
	}
	if got := mustRun(t, c, "sh", "-c", "cat /sys/class/net/*/operstate | sort | tr '\\n' ' '"); got != "unknown" {
		// A fresh netns has only lo, whose operstate is "unknown" when up.
		t.Errorf("network devices seen in the pod's /sys: operstate %q, want only lo", got)
	}
}

func TestContainerMountsHostDirReadOnlyWhenAsked(t *testing.T) {
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "data.txt"), []byte("volume-data"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := startPod(t, sandbox.Config{})
	c := sleeper(t, sb,
		sandbox.Mount{Source: hostDir, Target: "/vol/rw"},
		sandbox.Mount{Source: hostDir, Target: "/vol/ro", ReadOnly: true},
	)
	for _, p := range []string{"/vol/rw/data.txt", "/vol/ro/data.txt"} {
		if got := mustRun(t, c, "cat", p); got != "volume-data" {
			t.Errorf("%s = %q, want volume-data", p, got)
		}
	}
	_, errOut, code := run(t, c, "sh", "-c", "echo x > /vol/ro/new")
	if code == 0 || !strings.Contains(errOut, "Read-only") {
		t.Errorf("write to the read-only mount: exit %d, stderr %q; want a read-only file system error", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "new")); err == nil {
		t.Errorf("write through the read-only mount reached the host dir")
	}
	mustRun(t, c, "sh", "-c", "echo from-pod > /vol/rw/new")
	if got, err := os.ReadFile(filepath.Join(hostDir, "new")); err != nil || string(got) != "from-pod\n" {
		t.Errorf("write through the read-write mount: host file %q, %v", got, err)
	}
	// Another container of the pod does not see this container's volumes.
	other := sleeper(t, sb)
	if _, _, code := run(t, other, "test", "-e", "/vol/rw/data.txt"); code == 0 {
		t.Errorf("a container's volume is visible in another container")
	}
}

func TestPodWideMountAndFileMode(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho tool-ran \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sb := startPod(t, sandbox.Config{
		Mounts: []sandbox.Mount{{Source: bin, Target: "/tool", ReadOnly: true}},
		Files:  []sandbox.File{{Path: "/etc/knet-secret", Data: []byte("s3"), Mode: 0o600}},
	})
	c := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"/tool", "a"}, LogPath: filepath.Join(t.TempDir(), "log")})
	if st := waitDone(t, c); st.Code != 0 || st.Err != nil {
		t.Fatalf("/tool container: %+v", st)
	}
	c2 := sleeper(t, sb)
	if got := mustRun(t, c2, "stat", "-c", "%a", "/etc/knet-secret"); got != "600" {
		t.Errorf("mode of a pod file = %s, want 600", got)
	}
}

func TestContainersShareThePodNetworkNamespace(t *testing.T) {
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	sb := startPod(t, sandbox.Config{})
	a, b := sleeper(t, sb), sleeper(t, sb)
	nsA, nsB := mustRun(t, a, "readlink", "/proc/self/ns/net"), mustRun(t, b, "readlink", "/proc/self/ns/net")
	if nsA != nsB {
		t.Errorf("containers of one pod are in different network namespaces: %s vs %s", nsA, nsB)
	}
	if nsA == own {
		t.Errorf("pod shares the test's network namespace %s", own)
	}
	if pinned, err := os.Readlink(sb.NetNSPath()); err != nil || pinned != nsA {
		t.Errorf("NetNSPath %s -> %q (%v), want the containers' %s", sb.NetNSPath(), pinned, err, nsA)
	}

	host := startPod(t, sandbox.Config{HostNetwork: true, Hostname: "hostnet-pod"})
	hc := sleeper(t, host)
	if got := mustRun(t, hc, "readlink", "/proc/self/ns/net"); got != own {
		t.Errorf("HostNetwork pod is in network namespace %s, want the caller's %s", got, own)
	}
	if got := mustRun(t, hc, "hostname"); got != "hostnet-pod" {
		t.Errorf("HostNetwork pod hostname = %q, want its own", got)
	}
}

func TestExec(t *testing.T) {
	sb := startPod(t, sandbox.Config{})
	c := startContainer(t, sb, sandbox.ContainerConfig{
		Args:       []string{"sleep", "1000"},
		Env:        []string{"PATH=/usr/bin:/bin", "FROM_CONTAINER=yes"},
		WorkingDir: "/srv/app",
	})
	if _, _, code := run(t, c, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	if out, errOut, code := run(t, c, "sh", "-c", "echo out; echo err >&2"); out != "out\n" || errOut != "err\n" || code != 0 {
		t.Errorf("stdout %q stderr %q code %d; want out, err, 0", out, errOut, code)
	}
	if out, _, _ := runEnv(t, c, []string{"PATH=/usr/bin:/bin", "FOO=bar"}, "sh", "-c", "echo $FOO$FROM_CONTAINER"); out != "bar\n" {
		t.Errorf("exec with Env: %q, want bar", out)
	}
	if got := mustRun(t, c, "sh", "-c", "echo $FROM_CONTAINER"); got != "yes" {
		t.Errorf("exec without Env: FROM_CONTAINER=%q, want the container's yes", got)
	}
	if got := mustRun(t, c, "pwd"); got != "/srv/app" {
		t.Errorf("exec working directory %q, want the container's /srv/app", got)
	}
	if _, _, code := run(t, c, "knet-no-such-command"); code != 127 {
		t.Errorf("exec of a missing command: exit %d, want 127", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := c.Exec(ctx, sandbox.ExecConfig{Args: []string{"tr", "a-z", "A-Z"}, Stdin: strings.NewReader("hello"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "HELLO" {
		t.Errorf("exec with stdin: %q, code %d, err %v; want HELLO", out.String(), code, err)
	}

	out.Reset()
	resize := make(chan sandbox.TermSize, 1)
	resize <- sandbox.TermSize{Width: 123, Height: 45}
	code, err = c.Exec(ctx, sandbox.ExecConfig{
		Args: []string{"sh", "-c", "test -c \"$(tty)\" && tty; for i in $(seq 50); do s=$(stty size); [ \"$s\" = '45 123' ] && break; sleep 0.1; done; echo size=$s"},
		TTY:  true, Stdout: &out, Resize: resize,
	})
	if err != nil || code != 0 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "size=45 123") {
		t.Errorf("exec with TTY: %q, code %d, err %v; want a /dev/pts terminal of 45x123", out.String(), code, err)
	}

	// Cancelling the context ends the command.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	begin := time.Now()
	if _, err := c.Exec(short, sandbox.ExecConfig{Args: []string{"sleep", "1000"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("exec past its deadline: err %v, want DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("exec past its deadline returned after %v", d)
	}
}

func TestMissingExecutableFailsWithReason(t *testing.T) {
	sb := startPod(t, sandbox.Config{})
	for _, prog := range []string{"knet-no-such-binary", "/opt/knet/no-such-binary"} {
		c := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{prog}})
		st := waitDone(t, c)
		if st.Err == nil {
			t.Fatalf("%s: ExitStatus.Err is nil; want an executable-not-found error (status %+v)", prog, st)
		}
		if !errors.Is(st.Err, sandbox.ErrExecutableNotFound) || !strings.Contains(st.Err.Error(), prog) {
			t.Errorf("%s: ExitStatus.Err = %v; want ErrExecutableNotFound naming the program", prog, st.Err)
		}
		if st.Code != 127 {
			t.Errorf("%s: exit code %d, want 127", prog, st.Code)
		}
	}
}

func TestContainerExitAndSignal(t *testing.T) {
	sb := startPod(t, sandbox.Config{})
	c := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"sh", "-c", "exit 7"}})
	if st := waitDone(t, c); st.Code != 7 || st.Err != nil || st.Signal != 0 {
		t.Errorf("exit 7: status %+v", st)
	}

	s := sleeper(t, sb)
	select {
	case <-s.Done():
		t.Fatalf("sleep exited early: %+v", s.ExitStatus())
	default:
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, s)
	if st.Signal != syscall.SIGTERM || st.Code != 128+int(syscall.SIGTERM) {
		t.Errorf("after SIGTERM: status %+v, want killed by SIGTERM", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("times: started %v finished %v", st.StartedAt, st.FinishedAt)
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("signal to an exited container: %v, want nil", err)
	}
}

func TestStdinUserAndTTYContainers(t *testing.T) {
	sb := startPod(t, sandbox.Config{})
	logDir := t.TempDir()

	catLog := filepath.Join(logDir, "cat.log")
	cat := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"cat"}, Stdin: true, LogPath: catLog})
	io.WriteString(cat.Stdin(), "line-1\n")
	cat.Stdin().Close()
	if st := waitDone(t, cat); st.Code != 0 {
		t.Errorf("cat: %+v", st)
	}
	if got, _ := os.ReadFile(catLog); string(got) != "line-1\n" {
		t.Errorf("cat log = %q, want line-1", got)
	}

	idLog := filepath.Join(logDir, "id.log")
	user := &sandbox.User{UID: 1234, GID: 2345, Groups: []uint32{3456}}
	id := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"sh", "-c", "id; pwd"}, User: user, WorkingDir: "/data/work", LogPath: idLog})
	if st := waitDone(t, id); st.Code != 0 {
		t.Errorf("id: %+v", st)
	}
	got, _ := os.ReadFile(idLog)
	for _, want := range []string{"uid=1234", "gid=2345", "3456", "/data/work"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("id log %q lacks %q", got, want)
		}
	}
	u := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"sleep", "1000"}, User: user})
	if got := mustRun(t, u, "id", "-u"); got != "1234" {
		t.Errorf("exec in a container with User: uid %s, want 1234", got)
	}

	ttyLog := filepath.Join(logDir, "tty.log")
	tty := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"sh", "-c", "test -c \"$(tty)\" && tty; read line; echo got=$line"}, TTY: true, Stdin: true, LogPath: ttyLog})
	if err := tty.Resize(sandbox.TermSize{Width: 100, Height: 30}); err != nil {
		t.Error(err)
	}
	io.WriteString(tty.Stdin(), "typed\n")
	if st := waitDone(t, tty); st.Code != 0 {
		t.Errorf("tty container: %+v", st)
	}
	got, _ = os.ReadFile(ttyLog)
	if !strings.Contains(string(got), "/dev/pts/") || !strings.Contains(string(got), "got=typed") {
		t.Errorf("tty log = %q, want a /dev/pts terminal and got=typed", got)
	}
}

func TestDialReachesListenerInsideThePod(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox")
	}
	// A port free on the host: reaching it proves the connection went to the pod.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	sb := startPod(t, sandbox.Config{})
	logPath := filepath.Join(t.TempDir(), "nc.log")
	nc := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"/bin/busybox", "nc", "-l", "-p", port}, LogPath: logPath})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	for conn == nil {
		conn, err = sb.Dial(ctx, "tcp", "localhost:"+port)
		if ctx.Err() != nil {
			t.Fatalf("Dial localhost:%s in the pod: %v", port, err)
		}
		if err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	io.WriteString(conn, "hello-from-dial\n")
	conn.Close()
	if st := waitDone(t, nc); st.Code != 0 {
		t.Errorf("nc: %+v", st)
	}
	if got, _ := os.ReadFile(logPath); string(got) != "hello-from-dial\n" {
		t.Errorf("nc in the pod received %q, want hello-from-dial", got)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
		c.Close()
		t.Errorf("the pod's listener port %s is reachable from the host network namespace", port)
	}
	if _, err := sb.Dial(ctx, "tcp", "example.invalid:80"); err == nil {
		t.Errorf("Dial of a name other than localhost succeeded; want an error")
	}
}

func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	// A zombie is no longer running; reaping an orphan is init's job.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return err == nil && len(fields) > 0 && fields[0] == "Z"
}

func TestRemoveLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pod")
	sb := startPod(t, sandbox.Config{Dir: dir, Files: []sandbox.File{{Path: "/etc/hostname", Data: []byte("x\n")}}})
	volume := t.TempDir()
	marker := filepath.Join(volume, "keep")
	if err := os.WriteFile(marker, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "log")
	// The container leaves a background child behind, as shells do.
	c := startContainer(t, sb, sandbox.ContainerConfig{Args: []string{"sh", "-c", "sleep 1000 & echo $!; wait"}, LogPath: logPath, Mounts: []sandbox.Mount{{Source: volume, Target: "/vol"}}})
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if child == 0 {
		t.Fatal("background child PID never appeared in the log")
	}
	execDone := make(chan error, 1)
	execOut, execW := io.Pipe()
	go func() {
		_, err := c.Exec(context.Background(), sandbox.ExecConfig{Args: []string{"sh", "-c", "echo started; exec sleep 1000"}, Stdout: execW})
		execW.Close()
		execDone <- err
	}()
	line := make([]byte, len("started\n"))
	if _, err := io.ReadFull(execOut, line); err != nil {
		t.Fatalf("exec did not start: %v", err)
	}
	go io.Copy(io.Discard, execOut)

	pids := []int{sb.HolderPID(), c.PID(), child}
	if err := sb.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	select {
	case <-execDone:
	case <-time.After(10 * time.Second):
		t.Error("a running Exec did not end after Remove")
	}
	for _, pid := range pids {
		var gone bool
		for deadline := time.Now().Add(5 * time.Second); !gone && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			gone = processGone(pid)
		}
		if !gone {
			t.Errorf("process %d still runs after Remove", pid)
		}
	}
	if points := mountsUnder(t, dir); len(points) > 0 {
		t.Errorf("mounts under %s after Remove: %v", dir, points)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir %s after Remove: %v", dir, err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "host data" {
		t.Errorf("volume content after Remove: %q, %v", b, err)
	}
	if sb.Alive() {
		t.Error("Alive after Remove")
	}
	if err := sb.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := sb.StartContainer(sandbox.ContainerConfig{Name: "late", Args: []string{"true"}}); err == nil {
		t.Error("StartContainer after Remove succeeded")
	}
}

func TestAliveDetectsKilledHolder(t *testing.T) {
	sb := startPod(t, sandbox.Config{})
	if !sb.Alive() {
		t.Fatal("not Alive right after Start")
	}
	if err := syscall.Kill(sb.HolderPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); sb.Alive() && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if sb.Alive() {
		t.Fatal("Alive stays true after the holder was killed")
	}
	if _, err := sb.StartContainer(sandbox.ContainerConfig{Name: "x", Args: []string{"true"}}); err == nil {
		t.Error("StartContainer in a sandbox with a dead holder succeeded")
	}
}

func TestStartFailsCleanlyOnBadMount(t *testing.T) {
	requirePrivileges(t)
	dir := filepath.Join(t.TempDir(), "pod")
	_, err := sandbox.Start(context.Background(), sandbox.Config{
		ID: "knettest-sandbox-bad", Dir: dir,
		Mounts: []sandbox.Mount{{Source: "/nonexistent/knet-source", Target: "/x"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/knet-source") {
		t.Fatalf("Start with a missing mount source: %v; want an error naming it", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir left behind after a failed Start: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := func() sandbox.Config {
		return sandbox.Config{ID: "pod-1", Dir: "/var/lib/knet/pods/pod-1", Hostname: "pod-1", HelperBinary: "/usr/bin/knet"}
	}
	tests := []struct {
		name   string
		mutate func(*sandbox.Config)
		ok     bool
	}{
		{"valid", func(*sandbox.Config) {}, true},
		{"empty ID", func(c *sandbox.Config) { c.ID = "" }, false},
		{"ID with slash", func(c *sandbox.Config) { c.ID = "a/b" }, false},
		{"relative Dir", func(c *sandbox.Config) { c.Dir = "pods/x" }, false},
		{"root Dir", func(c *sandbox.Config) { c.Dir = "/" }, false},
		{"Dir with comma", func(c *sandbox.Config) { c.Dir = "/var/a,b" }, false},
		{"long hostname", func(c *sandbox.Config) { c.Hostname = strings.Repeat("h", 65) }, false},
		{"relative file path", func(c *sandbox.Config) { c.Files = []sandbox.File{{Path: "etc/hosts"}} }, false},
		{"mount onto /", func(c *sandbox.Config) { c.Mounts = []sandbox.Mount{{Source: "/a", Target: "/"}} }, false},
		{"relative mount source", func(c *sandbox.Config) { c.Mounts = []sandbox.Mount{{Source: "a", Target: "/a"}} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.mutate(&cfg)
			if err := cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestDefaultsHostnameFromID(t *testing.T) {
	cfg := sandbox.Config{ID: strings.Repeat("u", 70), Dir: "/x"}
	if err := cfg.Defaults(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Hostname) != 64 || cfg.HelperBinary == "" {
		t.Errorf("Defaults: hostname %q (%d), helper %q", cfg.Hostname, len(cfg.Hostname), cfg.HelperBinary)
	}
}

// rssKB reads a process's resident set size.
func rssKB(tb testing.TB, pid int) float64 {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb
		}
	}
	return 0
}

// BenchmarkStart measures Start until the holder is ready (Remove untimed),
// and reports the holder's memory.
func BenchmarkStart(b *testing.B) {
	requirePrivileges(b)
	parent := b.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rss float64
	for i := 0; b.Loop(); i++ {
		sb, err := sandbox.Start(context.Background(), sandbox.Config{
			ID: "knettest-bench-" + strconv.Itoa(i), Dir: filepath.Join(parent, strconv.Itoa(i)), Logger: logger,
			HelperBinary: os.Getenv(helperEnv),
			Files:        []sandbox.File{{Path: "/etc/hosts", Data: []byte("127.0.0.1 localhost\n")}},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rss += rssKB(b, sb.HolderPID())
		if err := sb.Remove(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(rss/float64(b.N), "holder-RSS-kB")
}

// BenchmarkStartContainer measures StartContainer until the program was exec'd.
func BenchmarkStartContainer(b *testing.B) {
	sb := startPod(b, sandbox.Config{})
	for b.Loop() {
		c, err := sb.StartContainer(sandbox.ContainerConfig{Name: "bench", Args: []string{"/bin/true"}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		<-c.Done()
		if st := c.ExitStatus(); st.Code != 0 || st.Err != nil {
			b.Fatalf("container: %+v", st)
		}
		b.StartTimer()
	}
}
