package kubelet

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// The process runtime behind small interfaces: the real one is package
// sandbox (sandbox_runtime.go); tests of the pod lifecycle use a fake.

// runtimeService starts pod sandboxes.
type runtimeService interface {
	StartSandbox(ctx context.Context, spec sandboxSpec) (podSandbox, error)
}

type sandboxSpec struct {
	ID          string
	Dir         string
	Hostname    string
	HostNetwork bool
	Files       []sandboxFile
	Mounts      []bindMount
}

type sandboxFile struct {
	Path string
	Data []byte
	Mode os.FileMode
}

type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

// podSandbox is one running pod sandbox.
type podSandbox interface {
	NetNSPath() string
	HolderPID() int
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	StartContainer(spec containerSpec) (containerProcess, error)
	// Remove kills every process of the sandbox; it is idempotent.
	Remove() error
}

type containerSpec struct {
	Name       string
	Args       []string
	Env        []string
	WorkingDir string
	Mounts     []bindMount
	User       *userSpec
	LogPath    string
	Stdin, TTY bool
}

type userSpec struct {
	UID, GID uint32
	Groups   []uint32
}

// containerProcess is one attempt of a container.
type containerProcess interface {
	PID() int
	Done() <-chan struct{}
	ExitStatus() exitStatus
	Signal(sig syscall.Signal) error
	Stdin() io.WriteCloser
	// Resize sets the size of the container's terminal (TTY containers).
	Resize(size termSize) error
	Exec(ctx context.Context, cfg execSpec) (int, error)
}

type exitStatus struct {
	Code       int
	Signal     syscall.Signal
	StartedAt  time.Time
	FinishedAt time.Time
	Err        error
}

type execSpec struct {
	Args, Env      []string
	TTY            bool
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan termSize
}

type termSize struct{ Width, Height uint16 }
