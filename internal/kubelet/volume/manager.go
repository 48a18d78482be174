// Package volume materializes a pod's volumes on the node for knet's kubelet
// and tells it which bind mounts each container needs.
//
// It owns the directory RootDir/<podUID> and everything below it: emptyDir
// directories and tmpfs mounts, and the files of configMap, secret,
// downwardAPI and projected volumes (service account tokens included), written
// with the upstream kubelet's AtomicWriter so that updates swap a "..data"
// symlink and whole-volume bind mounts stay valid. It reads ConfigMaps,
// Secrets and the Node and creates ServiceAccount tokens through the API.
//
// It never creates the bind mounts into a container (the kubelet's runtime
// does, from the returned Mount list), never writes outside RootDir/<podUID>
// except to create a hostPath of type DirectoryOrCreate or FileOrCreate, and
// never logs file contents: secrets and tokens stay out of logs.
package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Config configures a Manager.
type Config struct {
	// Client reads ConfigMaps, Secrets and the Node, and creates ServiceAccount tokens.
	Client kubernetes.Interface
	// RootDir holds one directory per pod: RootDir/<podUID>/volumes/<name>.
	RootDir string
	// NodeName is this node; downwardAPI limits of containers without limits
	// default to the Node's allocatable, as on a real kubelet.
	NodeName string
	// DisableSecretTmpfs writes secret and projected volumes to RootDir's
	// filesystem instead of a tmpfs. The kubelet keeps them in memory so
	// secrets never reach a disk; only set this where mounting is impossible.
	DisableSecretTmpfs bool
	// ContainerEnv, if set, returns a container's environment for expanding
	// subPathExpr, so it matches the environment the kubelet gives the
	// container. If nil, the env entries with value, fieldRef,
	// resourceFieldRef, configMapKeyRef and secretKeyRef are resolved here.
	ContainerEnv func(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (map[string]string, error)
	// Clock decides when a service account token is refreshed. Default: real time.
	Clock clock.PassiveClock
	// Logger receives one line per volume event. Default: slog.Default().
	Logger *slog.Logger
}

// Defaults fills unset optional fields.
func (c *Config) Defaults() {
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a Config the Manager cannot work with.
func (c *Config) Validate() error {
	if c.Client == nil {
		return errors.New("volume: Config.Client is required (a clientset for the API server)")
	}
	if c.RootDir == "" || !filepath.IsAbs(c.RootDir) {
		return fmt.Errorf("volume: Config.RootDir %q must be an absolute path", c.RootDir)
	}
	return nil
}

// Mount is one bind mount a container needs.
type Mount struct {
	// Source is the path on the node: a volume directory, or a file or
	// directory inside one for a subPath mount, or the hostPath.
	Source string
	// Target is the mountPath inside the container.
	Target string
	// ReadOnly is set for readOnly volumeMounts and, as on a real kubelet,
	// always for configMap, secret, downwardAPI and projected volumes.
	ReadOnly bool
}

// Manager sets up, refreshes and tears down pod volumes.
type Manager struct {
	cfg    Config
	tokens *tokenCache

	mu       sync.Mutex
	podLocks map[types.UID]*sync.Mutex
}

// NewManager returns a Manager after creating RootDir.
func NewManager(cfg Config) (*Manager, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.RootDir, 0o750); err != nil {
		return nil, fmt.Errorf("volume: create root dir: %w", err)
	}
	// Mount points in /proc/self/mountinfo are real paths; resolve symlinks
	// once so TearDown finds the tmpfs mounts it made.
	root, err := filepath.EvalSymlinks(cfg.RootDir)
	if err != nil {
		return nil, fmt.Errorf("volume: resolve root dir: %w", err)
	}
	cfg.RootDir = root
	return &Manager{
		cfg:      cfg,
		tokens:   newTokenCache(cfg.Client, cfg.Clock),
		podLocks: map[types.UID]*sync.Mutex{},
	}, nil
}

// lockPod serializes work on one pod: the AtomicWriter needs its caller to.
func (m *Manager) lockPod(uid types.UID) func() {
	m.mu.Lock()
	l, ok := m.podLocks[uid]
	if !ok {
		l = &sync.Mutex{}
		m.podLocks[uid] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *Manager) podDir(uid types.UID) string {
	return filepath.Join(m.cfg.RootDir, string(uid))
}

func (m *Manager) volumeDir(uid types.UID, name string) string {
	return filepath.Join(m.podDir(uid), "volumes", name)
}

// SetUp materializes every volume of the pod under RootDir/<podUID>/volumes/<name>
// and returns, per container name (init, regular and ephemeral containers),
// the bind mounts its volumeMounts need, in volumeMounts order. It is
// idempotent: calling it again for a running pod refreshes content and
// returns the same mounts. A missing non-optional ConfigMap, Secret or key,
// an unsupported volume kind, a hostPath that fails its type check, a
// volumeMount naming no volume, or a subPath escaping its volume is an error
// naming the volume (and container).
func (m *Manager) SetUp(ctx context.Context, pod *corev1.Pod) (map[string][]Mount, error) {
	unlock := m.lockPod(pod.UID)
	defer unlock()

	kinds := make(map[string]kind, len(pod.Spec.Volumes))
	for _, v := range pod.Spec.Volumes {
		k, err := volumeKind(v)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		kinds[v.Name] = k
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if err := m.setUpVolume(ctx, pod, v, kinds[v.Name]); err != nil {
			return nil, fmt.Errorf("pod %s/%s: volume %q: %w", pod.Namespace, pod.Name, v.Name, err)
		}
	}
	mounts := map[string][]Mount{}
	for _, c := range podContainers(pod) {
		ms, err := m.containerMounts(ctx, pod, c, kinds)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		mounts[c.Name] = ms
	}
	m.cfg.Logger.Info("pod volumes set up", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "volumes", len(pod.Spec.Volumes))
	return mounts, nil
}

func (m *Manager) setUpVolume(ctx context.Context, pod *corev1.Pod, v *corev1.Volume, k kind) error {
	switch k {
	case kindHostPath:
		return checkHostPath(v.HostPath)
	case kindEmptyDir:
		return m.setUpEmptyDir(pod, v)
	default:
		return m.writeProjection(ctx, pod, v, k)
	}
}

// Refresh re-reads the configMap, secret, downwardAPI and projected volumes
// of a pod whose volumes are set up, and atomically swaps the files that
// changed (service account tokens once 80% of their lifetime has passed).
// Call it periodically (the kubelet does every ~10 s); containers see updates
// through their whole-volume mounts, not through subPath mounts, as on a real
// kubelet. A pod that was never set up or was torn down is left alone. On
// error a volume keeps its previous content.
func (m *Manager) Refresh(ctx context.Context, pod *corev1.Pod) error {
	unlock := m.lockPod(pod.UID)
	defer unlock()

	if _, err := os.Stat(m.podDir(pod.UID)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var errs []error
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		k, err := volumeKind(*v)
		if err != nil || !k.projected() {
			continue
		}
		if _, err := os.Stat(m.volumeDir(pod.UID, v.Name)); err != nil {
			continue // not set up yet: SetUp reports its errors
		}
		if err := m.writeProjection(ctx, pod, v, k); err != nil {
			errs = append(errs, fmt.Errorf("refresh pod %s/%s volume %q: %w", pod.Namespace, pod.Name, v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// TearDown unmounts every tmpfs below RootDir/<podUID>, removes the directory
// and forgets the pod's tokens. It is idempotent and also cleans up after a
// crash, since it finds mounts in /proc/self/mountinfo.
func (m *Manager) TearDown(podUID types.UID) error {
	unlock := m.lockPod(podUID)
	defer unlock()

	dir := m.podDir(podUID)
	if err := unmountAllBelow(dir); err != nil {
		return fmt.Errorf("tear down pod %s volumes: %w", podUID, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("tear down pod %s volumes: remove %s: %w", podUID, dir, err)
	}
	m.tokens.forget(podUID)
	m.mu.Lock()
	delete(m.podLocks, podUID)
	m.mu.Unlock()
	m.cfg.Logger.Info("pod volumes torn down", "uid", podUID)
	return nil
}
