package sandbox

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Config describes one pod sandbox.
type Config struct {
	ID          string // unique per sandbox, e.g. pod UID
	Dir         string // state dir owned by the sandbox; created by Start, removed by Remove
	Hostname    string
	HostNetwork bool
	Files       []File  // written under Dir and bind-mounted into the pod root
	Mounts      []Mount // bind mounts visible to every container, e.g. the agnhost binary at /agnhost
	// HelperBinary implements `sandbox-holder` and `container-init`
	// (see HolderMain and ContainerInitMain). Default: os.Executable().
	HelperBinary string
	// Logger receives one line per lifecycle event. Default: slog.Default().
	Logger *slog.Logger
}

// File is a file the sandbox writes under its Dir and bind-mounts at Path
// inside the pod root (e.g. /etc/hosts, /etc/hostname, /etc/resolv.conf).
type File struct {
	Path string
	Data []byte
	Mode os.FileMode // default 0644
}

// Mount bind-mounts the host path Source at Target inside the pod root.
// Directories are bound recursively; ReadOnly applies to the whole subtree.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// Defaults fills the fields a caller may leave empty.
func (c *Config) Defaults() error {
	if c.HelperBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable to use as sandbox helper (set Config.HelperBinary): %w", err)
		}
		c.HelperBinary = exe
	}
	if c.Hostname == "" {
		c.Hostname = c.ID
		if len(c.Hostname) > maxHostname {
			c.Hostname = c.Hostname[:maxHostname]
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for i := range c.Files {
		if c.Files[i].Mode == 0 {
			c.Files[i].Mode = 0o644
		}
	}
	return nil
}

// maxHostname is the kernel's limit for sethostname (HOST_NAME_MAX).
const maxHostname = 64

// Validate reports the first thing in c that Start cannot honour.
func (c *Config) Validate() error {
	if c.ID == "" || strings.ContainsAny(c.ID, "/\x00") {
		return fmt.Errorf("sandbox ID %q must be non-empty and contain no '/'", c.ID)
	}
	if !filepath.IsAbs(c.Dir) || filepath.Clean(c.Dir) == "/" {
		return fmt.Errorf("sandbox %s: Dir %q must be an absolute path below /", c.ID, c.Dir)
	}
	// The overlay mount options are comma- and colon-separated lists of paths.
	if strings.ContainsAny(c.Dir, ",:") {
		return fmt.Errorf("sandbox %s: Dir %q must not contain ',' or ':' (overlay option syntax)", c.ID, c.Dir)
	}
	if c.Hostname == "" || len(c.Hostname) > maxHostname {
		return fmt.Errorf("sandbox %s: hostname %q must have 1 to %d characters", c.ID, c.Hostname, maxHostname)
	}
	if !filepath.IsAbs(c.HelperBinary) {
		return fmt.Errorf("sandbox %s: HelperBinary %q must be an absolute path", c.ID, c.HelperBinary)
	}
	for _, f := range c.Files {
		if err := checkPodPath(f.Path); err != nil {
			return fmt.Errorf("sandbox %s: file: %w", c.ID, err)
		}
	}
	for _, m := range c.Mounts {
		if err := m.validate(); err != nil {
			return fmt.Errorf("sandbox %s: %w", c.ID, err)
		}
	}
	return nil
}

func (m Mount) validate() error {
	if !filepath.IsAbs(m.Source) {
		return fmt.Errorf("mount source %q must be an absolute host path", m.Source)
	}
	if err := checkPodPath(m.Target); err != nil {
		return fmt.Errorf("mount of %s: %w", m.Source, err)
	}
	return nil
}

// checkPodPath accepts absolute paths other than the pod root itself; they are
// resolved inside the pod root later, so ".." cannot leave it anyway.
func checkPodPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) == "/" {
		return fmt.Errorf("path %q inside the pod must be absolute and not /", p)
	}
	return nil
}

// ContainerConfig describes one container process of a sandbox.
type ContainerConfig struct {
	Name       string
	Args       []string // argv; Args[0] resolved against PATH from Env inside the pod root
	Env        []string // KEY=VALUE
	WorkingDir string   // inside the pod root; created if missing; default "/"
	Mounts     []Mount  // this container's volume mounts
	User       *User    // nil: root
	LogPath    string   // host path; stdout and stderr appended raw. Empty: discarded
	Stdin      bool
	TTY        bool
}

// User is the identity a container process runs as.
type User struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups
}

// Validate reports the first thing in c that StartContainer cannot honour.
func (c *ContainerConfig) Validate() error {
	if c.Name == "" {
		return errors.New("container name must be non-empty")
	}
	if len(c.Args) == 0 || c.Args[0] == "" {
		return fmt.Errorf("container %s: Args must name a program to run", c.Name)
	}
	if c.WorkingDir != "" && !filepath.IsAbs(c.WorkingDir) {
		return fmt.Errorf("container %s: WorkingDir %q must be absolute", c.Name, c.WorkingDir)
	}
	if c.LogPath != "" && !filepath.IsAbs(c.LogPath) {
		return fmt.Errorf("container %s: LogPath %q must be absolute", c.Name, c.LogPath)
	}
	for _, m := range c.Mounts {
		if err := m.validate(); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
	}
	return nil
}

// ExitStatus is how a container ended.
type ExitStatus struct {
	Code       int            // exit code; 128+signal when killed by a signal
	Signal     syscall.Signal // the signal that killed it, or 0
	StartedAt  time.Time
	FinishedAt time.Time
	// Err is set when the container never ran its program: the setup inside
	// the pod failed (a *StartError) or the process could not be waited for.
	Err error
}

// ExecConfig describes a command run inside a running container.
type ExecConfig struct {
	Args, Env      []string
	TTY            bool
	Stdin          io.Reader
	Stdout, Stderr io.Writer // with TTY, the terminal output goes to Stdout
	Resize         <-chan TermSize
}

// TermSize is a terminal size in character cells.
type TermSize struct{ Width, Height uint16 }
