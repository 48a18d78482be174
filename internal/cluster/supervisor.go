package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// deadlineKill bounds the wait for killed processes to leave their cgroup. Pods' processes
// unmount their overlays while they die; on a loaded machine that took over 10 s.
const deadlineKill = 60 * time.Second

// NodeProcess keeps one `knet node` process running inside a node's network namespace and
// restarts it when it exits, with a short back-off.
type NodeProcess struct {
	Node    NodeLayout
	Binary  string   // the knet binary
	Args    []string // arguments after the binary, e.g. ["node", "--config", path]
	LogDir  string
	PIDFile string // where the running process's PID is written ("" = nowhere)
	Cgroup  *Cgroup
	Logger  *slog.Logger
}

// Run starts the process and restarts it until ctx ends; it returns after the last exit.
func (p *NodeProcess) Run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		started := time.Now()
		err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		p.Logger.Warn("node process exited; restarting", "node", p.Node.Name, "err", err, "after", backoff)
		if time.Since(started) > time.Minute {
			backoff = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (p *NodeProcess) runOnce(ctx context.Context) error {
	if err := os.MkdirAll(p.LogDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(p.LogDir, p.Node.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// nsenter joins the node's network namespace before exec, so the node process starts with all
	// its threads in it (a Go program cannot move itself wholesale).
	args := append([]string{"--net=/run/netns/" + p.Node.Netns, "--", p.Binary}, p.Args...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.Cgroup != nil {
		fd, err := p.Cgroup.Into(cmd)
		if err != nil {
			return err
		}
		defer fd.Close()
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %s: %w", p.Node.Name, err)
	}
	if p.PIDFile != "" {
		// `knet status` and tests read it; a stale file after a crash names a dead PID.
		_ = os.WriteFile(p.PIDFile, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
}
