package kubelet

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"knet/internal/kubelet/volume"
	"knet/internal/sandbox"
)

// Adapters from the kubelet's small interfaces to packages sandbox and
// volume.

type sandboxRuntime struct {
	helper string
	cfg    *Config
}

func newSandboxRuntime(cfg *Config) runtimeService {
	return sandboxRuntime{helper: cfg.HelperBinary, cfg: cfg}
}

func toSandboxMounts(ms []bindMount) []sandbox.Mount {
	out := make([]sandbox.Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, sandbox.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	return out
}

func (r sandboxRuntime) StartSandbox(ctx context.Context, spec sandboxSpec) (podSandbox, error) {
	cfg := sandbox.Config{
		ID:           spec.ID,
		Dir:          spec.Dir,
		Hostname:     spec.Hostname,
		HostNetwork:  spec.HostNetwork,
		Mounts:       toSandboxMounts(spec.Mounts),
		HelperBinary: r.helper,
		Logger:       r.cfg.Logger,
	}
	for _, f := range spec.Files {
		cfg.Files = append(cfg.Files, sandbox.File{Path: f.Path, Data: f.Data, Mode: f.Mode})
	}
	sb, err := sandbox.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return sandboxAdapter{sb}, nil
}

type sandboxAdapter struct{ *sandbox.Sandbox }

func (s sandboxAdapter) StartContainer(spec containerSpec) (containerProcess, error) {
	cfg := sandbox.ContainerConfig{
		Name:       spec.Name,
		Args:       spec.Args,
		Env:        spec.Env,
		WorkingDir: spec.WorkingDir,
		Mounts:     toSandboxMounts(spec.Mounts),
		LogPath:    spec.LogPath,
		Stdin:      spec.Stdin,
		TTY:        spec.TTY,
	}
	if spec.User != nil {
		cfg.User = &sandbox.User{UID: spec.User.UID, GID: spec.User.GID, Groups: spec.User.Groups}
	}
	c, err := s.Sandbox.StartContainer(cfg)
	if err != nil {
		return nil, err
	}
	return containerAdapter{c}, nil
}

type containerAdapter struct{ *sandbox.Container }

func (c containerAdapter) ExitStatus() exitStatus {
	st := c.Container.ExitStatus()
	return exitStatus{Code: st.Code, Signal: st.Signal, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt, Err: st.Err}
}

func (c containerAdapter) Resize(s termSize) error {
	return c.Container.Resize(sandbox.TermSize{Width: s.Width, Height: s.Height})
}

func (c containerAdapter) Exec(ctx context.Context, e execSpec) (int, error) {
	cfg := sandbox.ExecConfig{Args: e.Args, Env: e.Env, TTY: e.TTY, Stdin: e.Stdin, Stdout: e.Stdout, Stderr: e.Stderr}
	if e.Resize != nil {
		ch := make(chan sandbox.TermSize)
		go func() {
			defer close(ch)
			for s := range e.Resize {
				select {
				case ch <- sandbox.TermSize{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			}
		}()
		cfg.Resize = ch
	}
	return c.Container.Exec(ctx, cfg)
}

type volumeAdapter struct{ m *volume.Manager }

func newVolumeManager(cfg *Config) (volumeManager, error) {
	m, err := volume.NewManager(volume.Config{
		Client:   cfg.Client,
		RootDir:  cfg.volumesDir(),
		NodeName: cfg.NodeName,
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("volume manager: %w", err)
	}
	return volumeAdapter{m}, nil
}

func (v volumeAdapter) SetUp(ctx context.Context, pod *corev1.Pod) (map[string][]bindMount, error) {
	ms, err := v.m.SetUp(ctx, pod)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]bindMount, len(ms))
	for name, list := range ms {
		for _, m := range list {
			out[name] = append(out[name], bindMount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	return out, nil
}

func (v volumeAdapter) Refresh(ctx context.Context, pod *corev1.Pod) error {
	return v.m.Refresh(ctx, pod)
}
func (v volumeAdapter) TearDown(uid types.UID) error { return v.m.TearDown(uid) }
