package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Container is a process running inside a sandbox.
type Container struct {
	sb        *Sandbox
	name      string
	env       []string
	user      *User
	cmd       *exec.Cmd
	startedAt time.Time
	stdin     io.WriteCloser
	tty       *os.File // the terminal's master side, when TTY

	done   chan struct{}
	status ExitStatus // written before done is closed
}

// ttyFlushTimeout bounds how long a finished process's terminal output is
// still copied, in case something it left behind keeps the terminal open.
const ttyFlushTimeout = 2 * time.Second

// execWaitDelay bounds how long Exec waits for output after the command
// exited (a background child may hold its stdout open forever).
const execWaitDelay = 5 * time.Second

// StartContainer starts a container in the sandbox and returns once its
// program has been exec'd, or its setup failed: then the container is
// returned anyway, already (or about to be) Done, with ExitStatus.Err saying
// why (a *StartError; errors.Is(err, ErrExecutableNotFound) for a missing
// program). An error is returned only when nothing could be started.
func (s *Sandbox) StartContainer(cfg ContainerConfig) (*Container, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.cfg.ID, err)
	}
	if !s.Alive() {
		return nil, fmt.Errorf("start container %s: holder of sandbox %s is not running; re-create the sandbox", cfg.Name, s.cfg.ID)
	}
	c, err := s.startContainer(cfg)
	if err != nil {
		return nil, fmt.Errorf("start container %s in sandbox %s: %w", cfg.Name, s.cfg.ID, err)
	}
	return c, nil
}

func (s *Sandbox) startContainer(cfg ContainerConfig) (*Container, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("%w (install util-linux)", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("%w (install util-linux)", err)
	}
	specFile, err := s.writeContainerSpec(cfg)
	if err != nil {
		return nil, err
	}
	// Read by container-init before readSetupResult returns (or never); it
	// holds the environment, so do not keep it.
	defer os.Remove(specFile)
	logPath := cfg.LogPath
	if logPath == "" {
		logPath = os.DevNull
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	// With a TTY, the terminal copier takes the log over once the process runs.
	ownLog := true
	defer func() {
		if ownLog {
			logFile.Close()
		}
	}()
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create setup pipe: %w", err)
	}
	defer errR.Close()

	// No --fork anywhere: nsenter execs unshare, which execs container-init,
	// which execs the program, so the PID started here is the container's.
	cmd := exec.Command(nsenter, "--target", strconv.Itoa(s.HolderPID()), "--mount", "--uts", "--ipc", "--net", "--",
		unshare, "--mount", "--propagation", "private", "--",
		s.cfg.HelperBinary, "container-init", specFile)
	cmd.Env = []string{} // the program's environment travels in the spec
	cmd.ExtraFiles = []*os.File{errW}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:    true, // its own process group, killed as a whole when it ends
		Pdeathsig: syscall.SIGKILL,
	}
	c := &Container{sb: s, name: cfg.Name, env: cfg.Env, user: cfg.User, cmd: cmd, done: make(chan struct{})}

	var term *os.File
	if cfg.TTY {
		if c.tty, term, err = openPTY(s.ptmxPath()); err != nil {
			errW.Close()
			return nil, err
		}
		defer term.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = term, term, term
		cmd.SysProcAttr.Setctty = true // fd 0 of the child becomes its controlling terminal
		if cfg.Stdin {
			c.stdin = ttyInput{c.tty}
		}
	} else {
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if cfg.Stdin {
			if c.stdin, err = cmd.StdinPipe(); err != nil {
				errW.Close()
				return nil, fmt.Errorf("create stdin pipe: %w", err)
			}
		}
	}
	err = cmd.Start()
	errW.Close()
	if err != nil {
		if c.tty != nil {
			c.tty.Close()
		}
		return nil, fmt.Errorf("run %s: %w", nsenter, err)
	}
	ttyCopied := make(chan struct{})
	if c.tty != nil {
		ownLog = false
		go func() {
			defer close(ttyCopied)
			defer logFile.Close()
			if err := copyTerminal(logFile, c.tty); err != nil {
				s.log.Error("copy container terminal output", "container", cfg.Name, "err", err)
			}
		}()
	} else {
		close(ttyCopied)
	}

	startErr := readSetupResult(errR)
	c.startedAt = time.Now()
	s.mu.Lock()
	removed := s.removed
	s.containers[c] = struct{}{}
	s.mu.Unlock()
	go c.wait(startErr, ttyCopied)
	if removed {
		c.Signal(syscall.SIGKILL)
		return nil, errors.New("sandbox was removed meanwhile")
	}
	if startErr != nil {
		s.log.Info("container failed to start", "container", cfg.Name, "err", startErr)
	} else {
		s.log.Info("container started", "container", cfg.Name, "pid", c.PID())
	}
	return c, nil
}

func (s *Sandbox) writeContainerSpec(cfg ContainerConfig) (string, error) {
	f, err := os.CreateTemp(filepath.Join(s.cfg.Dir, containersDir), cfg.Name+"-*.json")
	if err != nil {
		return "", fmt.Errorf("create container spec: %w", err)
	}
	f.Close()
	path := f.Name()
	spec := containerSpec{
		Rootfs:     filepath.Join(s.cfg.Dir, rootfsDir),
		Mounts:     cfg.Mounts,
		WorkingDir: cfg.WorkingDir,
		User:       cfg.User,
		Args:       cfg.Args,
		Env:        cfg.Env,
	}
	if err := writeJSON(path, spec); err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// readSetupResult reads the setup pipe of container-init to its end, which
// comes when the program was exec'd (close-on-exec) or the process died.
func readSetupResult(r io.Reader) error {
	b, _ := io.ReadAll(r)
	rest, reached := bytes.CutPrefix(b, []byte{setupExecing})
	switch {
	case len(b) == 0:
		return &StartError{Reason: reasonSetup, Message: "nsenter or unshare failed before container-init ran; see the container log"}
	case reached && len(rest) == 0:
		return nil
	}
	var se StartError
	if err := json.Unmarshal(rest, &se); err != nil {
		return &StartError{Reason: reasonSetup, Message: string(rest)}
	}
	return &se
}

func (c *Container) wait(startErr error, ttyCopied <-chan struct{}) {
	pid := c.cmd.Process.Pid
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
	// Not reaped yet, so the PID (also its process group's ID) cannot be
	// reused: end what the program left behind, as the end of a container's
	// PID namespace would.
	unix.Kill(-pid, unix.SIGKILL)
	waitErr := c.cmd.Wait()

	st := ExitStatus{StartedAt: c.startedAt, FinishedAt: time.Now(), Err: startErr}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			st.Signal = ws.Signal()
			st.Code = 128 + int(st.Signal)
		} else {
			st.Code = ws.ExitStatus()
		}
	} else if st.Err == nil {
		st.Err = fmt.Errorf("wait for container %s: %w", c.name, waitErr)
	}
	if c.tty != nil {
		select {
		case <-ttyCopied:
		case <-time.After(ttyFlushTimeout):
		}
		c.tty.Close()
	}
	c.sb.mu.Lock()
	delete(c.sb.containers, c)
	c.sb.mu.Unlock()
	c.status = st
	close(c.done)
	c.sb.log.Info("container exited", "container", c.name, "code", st.Code, "signal", st.Signal)
}

// PID is the container's process, as seen from the host.
func (c *Container) PID() int { return c.cmd.Process.Pid }

// Done is closed when the container has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// ExitStatus says how the container ended; valid after Done. Before that
// only StartedAt is set.
func (c *Container) ExitStatus() ExitStatus {
	select {
	case <-c.done:
		return c.status
	default:
		return ExitStatus{StartedAt: c.startedAt}
	}
}

// Signal sends sig to the container's main process. A container that has
// already exited is not an error.
func (c *Container) Signal(sig syscall.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal container %s: %w", c.name, err)
	}
	return nil
}

// Stdin is the container's standard input; nil unless ContainerConfig.Stdin.
// With a TTY, Close sends end-of-file (^D) instead of closing the terminal.
func (c *Container) Stdin() io.WriteCloser { return c.stdin }

// Resize changes the size of the container's terminal.
func (c *Container) Resize(size TermSize) error {
	if c.tty == nil {
		return fmt.Errorf("resize container %s: it has no terminal", c.name)
	}
	return setTermSize(c.tty, size)
}

type ttyInput struct{ master *os.File }

func (t ttyInput) Write(p []byte) (int, error) { return t.master.Write(p) }

// Close sends the terminal's end-of-file character; the master must stay
// open because it also carries the container's output.
func (t ttyInput) Close() error {
	_, err := t.master.Write([]byte{4})
	return err
}

// Exec runs a command inside the running container (its namespaces, root,
// working directory and user; supplementary groups are not applied) and
// returns its exit code, 128+signal if a signal ended it. With a nil Env the
// command gets the container's environment. Cancelling ctx kills the command.
func (c *Container) Exec(ctx context.Context, e ExecConfig) (int, error) {
	if len(e.Args) == 0 {
		return -1, fmt.Errorf("exec in container %s: no command given", c.name)
	}
	select {
	case <-c.done:
		return -1, fmt.Errorf("exec in container %s: container is not running", c.name)
	default:
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return -1, fmt.Errorf("exec in container %s: %w (install util-linux)", c.name, err)
	}
	args := []string{"--target", strconv.Itoa(c.PID()), "--mount", "--uts", "--ipc", "--net", "--root", "--wd"}
	if u := c.user; u != nil {
		args = append(args, "--setgid", strconv.FormatUint(uint64(u.GID), 10), "--setuid", strconv.FormatUint(uint64(u.UID), 10))
	}
	cmd := exec.CommandContext(ctx, nsenter, append(append(args, "--"), e.Args...)...)
	cmd.Env = e.Env
	if cmd.Env == nil {
		cmd.Env = c.env
		if cmd.Env == nil {
			cmd.Env = []string{}
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = execWaitDelay

	var master, term *os.File
	if e.TTY {
		if master, term, err = openPTY(c.sb.ptmxPath()); err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", c.name, err)
		}
		defer master.Close()
		defer term.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = term, term, term
		cmd.SysProcAttr.Setctty = true
	} else {
		cmd.Stdout, cmd.Stderr = e.Stdout, e.Stderr
		if e.Stdin != nil {
			// Our own pipe, so Wait does not hang on a Stdin that never ends.
			w, err := cmd.StdinPipe()
			if err != nil {
				return -1, fmt.Errorf("exec in container %s: %w", c.name, err)
			}
			go func() {
				io.Copy(w, e.Stdin)
				w.Close()
			}()
		}
	}
	if err := c.sb.trackExec(cmd); err != nil {
		return -1, fmt.Errorf("exec in container %s: %w", c.name, err)
	}
	defer c.sb.untrackExec(cmd)

	outCopied := make(chan struct{})
	if master != nil {
		term.Close() // the child holds the terminal now; its exit ends our reads
		go func() {
			defer close(outCopied)
			out := e.Stdout
			if out == nil {
				out = io.Discard
			}
			copyTerminal(out, master)
		}()
		if e.Stdin != nil {
			go io.Copy(master, e.Stdin)
		}
		if e.Resize != nil {
			go func() {
				for size := range e.Resize {
					setTermSize(master, size)
				}
			}()
		}
	} else {
		close(outCopied)
	}
	waitErr := cmd.Wait()
	select {
	case <-outCopied:
	case <-time.After(execWaitDelay):
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ctx.Err() != nil:
		return -1, fmt.Errorf("exec in container %s: %w", c.name, ctx.Err())
	case !ok:
		return -1, fmt.Errorf("exec in container %s: %w", c.name, waitErr)
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// trackExec starts cmd and records it so that Remove kills it.
func (s *Sandbox) trackExec(cmd *exec.Cmd) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return errors.New("sandbox was removed")
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.execs[cmd.Process] = struct{}{}
	return nil
}

func (s *Sandbox) untrackExec(cmd *exec.Cmd) {
	s.mu.Lock()
	delete(s.execs, cmd.Process)
	s.mu.Unlock()
}
