// Package ipam allocates pod IPv4 addresses from one node's podCIDR and keeps
// the reservations on disk, one file per reserved address.
//
// It owns exactly one directory (Config.Dir): a reservation file per address
// (named after the address, created with O_EXCL, content "containerID\nifname"),
// a "lock" file taken with flock(2) around every change, and a "last_reserved_ip"
// pointer so allocation walks the range round-robin and a freed address is not
// handed out again right away. It never touches network interfaces, routes or
// any file outside that directory. Several processes (one CNI plugin invocation
// each) may use the same directory at once; the flock serialises them.
package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	lockFileName     = "lock"
	lastReservedName = "last_reserved_ip"
)

// Config says which range to allocate from and where the reservations live.
type Config struct {
	// Dir holds the reservation files. It is created if missing.
	Dir string
	// Subnet is the node's podCIDR, e.g. 10.244.1.0/24.
	Subnet netip.Prefix
	// Gateway is never handed out. Default: the first address of Subnet.
	Gateway netip.Addr
	// Logger receives one line per repaired reservation. Default: slog.Default().
	Logger *slog.Logger
}

// Defaults fills in the gateway and logger.
func (c *Config) Defaults() {
	c.Subnet = c.Subnet.Masked()
	if !c.Gateway.IsValid() && c.Subnet.IsValid() {
		c.Gateway = c.Subnet.Addr().Next()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a config that cannot allocate anything.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("ipam: Dir is empty: set the directory that stores IP reservations")
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() {
		return fmt.Errorf("ipam: podCIDR %q is not an IPv4 prefix: set the node's spec.podCIDR", c.Subnet)
	}
	if c.Subnet.Bits() > 30 {
		return fmt.Errorf("ipam: podCIDR %s is too small (need at least a /30): give the node a larger podCIDR", c.Subnet)
	}
	if !c.Subnet.Contains(c.Gateway) {
		return fmt.Errorf("ipam: gateway %s is outside podCIDR %s", c.Gateway, c.Subnet)
	}
	return nil
}

// Attachment identifies one pod interface, as CNI does: container ID plus interface name.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Reservation is one reserved address and its owner.
type Reservation struct {
	IP netip.Addr
	Attachment
}

// ExhaustedError is returned when every address of the range is reserved.
// The CNI plugin reports it with code 999 (types.ErrInternal): it is not a
// transient "try again later" (code 11) condition, because retrying cannot
// succeed until a user deletes pods or enlarges the podCIDR.
type ExhaustedError struct {
	Subnet netip.Prefix
	Size   int
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("ipam: no free pod IP in %s (all %d usable addresses are reserved): delete pods on this node or give the node a larger podCIDR",
		e.Subnet, e.Size)
}

// Store is an open reservation directory. It holds no state in memory besides
// its config, so any number of Stores (in one process or many) can share a Dir.
type Store struct {
	cfg Config
}

// Open validates cfg and creates the directory if needed.
func Open(cfg Config) (*Store, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("ipam: create reservation dir: %w", err)
	}
	return &Store{cfg: cfg}, nil
}

// Subnet is the range this store allocates from.
func (s *Store) Subnet() netip.Prefix { return s.cfg.Subnet }

// Gateway is the reserved gateway address.
func (s *Store) Gateway() netip.Addr { return s.cfg.Gateway }

// withLock runs fn while holding an exclusive flock on the store's lock file.
// flock locks belong to the open file description, so goroutines of one
// process exclude each other too, as long as each opens the file itself.
func (s *Store) withLock(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(s.cfg.Dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ipam: open lock file: %w", err)
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ipam: lock %s: %w", f.Name(), err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it anyway
	return fn()
}

// Allocate reserves an address for the attachment. If the attachment already
// holds one (a repeated ADD), that address is returned again.
func (s *Store) Allocate(a Attachment) (netip.Addr, error) {
	if a.ContainerID == "" || strings.ContainsAny(a.ContainerID, "\n") || strings.ContainsAny(a.IfName, "\n") {
		return netip.Addr{}, fmt.Errorf("ipam: invalid attachment %q/%q", a.ContainerID, a.IfName)
	}
	var got netip.Addr
	err := s.withLock(func() error {
		res, err := s.scan()
		if err != nil {
			return err
		}
		used := make(map[netip.Addr]bool, len(res))
		for _, r := range res {
			if r.Attachment == a {
				got = r.IP
				return nil
			}
			used[r.IP] = true
		}
		first, last := s.hostRange()
		start := s.lastReserved()
		if !start.IsValid() || start.Compare(first) < 0 || start.Compare(last) >= 0 {
			start = last // so that the first candidate wraps to `first`
		}
		size := 0
		for ip := first; ip.Compare(last) <= 0; ip = ip.Next() {
			if ip != s.cfg.Gateway {
				size++
			}
		}
		for ip, n := start.Next(), 0; n <= size+1; ip, n = ip.Next(), n+1 {
			if ip.Compare(last) > 0 {
				ip = first
			}
			if ip == s.cfg.Gateway || used[ip] {
				continue
			}
			if err := s.reserve(ip, a); err != nil {
				if errors.Is(err, os.ErrExist) {
					continue // reserved by a file scan() could not see; keep looking
				}
				return err
			}
			got = ip
			// The pointer is a hint: a torn write fails to parse and only
			// changes which address comes next, so it is overwritten in place
			// (no temp file, rename or fsync on the ADD path).
			_ = os.WriteFile(filepath.Join(s.cfg.Dir, lastReservedName), []byte(ip.String()), 0o644)
			return nil
		}
		return &ExhaustedError{Subnet: s.cfg.Subnet, Size: size}
	})
	return got, err
}

// reserve creates the reservation file with O_EXCL so two writers can never
// both believe they own an address, even without the lock.
func (s *Store) reserve(ip netip.Addr, a Attachment) error {
	path := filepath.Join(s.cfg.Dir, ip.String())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("ipam: reserve %s: %w", ip, err)
	}
	_, werr := f.WriteString(a.ContainerID + "\n" + a.IfName)
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("ipam: write reservation %s: %w", ip, werr)
	}
	return nil
}

// hostRange returns the first and last address usable for pods:
// everything but the network and broadcast addresses.
func (s *Store) hostRange() (first, last netip.Addr) {
	p := s.cfg.Subnet
	first = p.Addr().Next()
	b := p.Addr().As4()
	hostBits := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << hostBits) - 1
	bcast := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return first, bcast.Prev()
}

func (s *Store) lastReserved() netip.Addr {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, lastReservedName))
	if err != nil {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}
	}
	return ip
}

// scan reads every reservation. A reservation file that cannot be parsed (for
// example left empty by a crash between create and write) owns nothing anyone
// could release, so it is removed and its address becomes free again.
// Callers must hold the lock.
func (s *Store) scan() ([]Reservation, error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: read reservation dir: %w", err)
	}
	var out []Reservation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !ip.Is4() {
			continue // lock, pointer, or foreign files
		}
		// A reservation outside the podCIDR (left from an earlier podCIDR) is
		// kept: Allocate never hands it out, and Release or GC free it.
		path := filepath.Join(s.cfg.Dir, e.Name())
		a, perr := readReservation(path)
		if perr != nil || ip == s.cfg.Gateway {
			if perr == nil {
				perr = fmt.Errorf("the gateway %s cannot be reserved", ip)
			}
			s.cfg.Logger.Warn("removing unusable IP reservation", "ip", ip, "file", path, "err", perr)
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("ipam: remove corrupt reservation %s: %w", path, err)
			}
			continue
		}
		out = append(out, Reservation{IP: ip, Attachment: a})
	}
	return out, nil
}

func readReservation(path string) (Attachment, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Attachment{}, err
	}
	id, ifname, ok := strings.Cut(string(b), "\n")
	id = strings.TrimSpace(id)
	ifname = strings.TrimSpace(ifname)
	if !ok || id == "" || ifname == "" || strings.Contains(ifname, "\n") {
		return Attachment{}, fmt.Errorf("malformed reservation content %q", b)
	}
	return Attachment{ContainerID: id, IfName: ifname}, nil
}

// Lookup returns the address reserved for the attachment, if any.
func (s *Store) Lookup(a Attachment) (netip.Addr, bool, error) {
	var ip netip.Addr
	var found bool
	err := s.withLock(func() error {
		res, err := s.scan()
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Attachment == a {
				ip, found = r.IP, true
			}
		}
		return nil
	})
	return ip, found, err
}

// Reservations lists every current reservation (after removing corrupt ones).
func (s *Store) Reservations() ([]Reservation, error) {
	var out []Reservation
	err := s.withLock(func() error {
		var err error
		out, err = s.scan()
		return err
	})
	return out, err
}

// Release frees the addresses held by the attachment. An empty IfName
// releases every address of the container. Releasing something that holds
// nothing succeeds, so CNI DEL can be repeated.
func (s *Store) Release(a Attachment) ([]netip.Addr, error) {
	var freed []netip.Addr
	err := s.withLock(func() error {
		res, err := s.scan()
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.ContainerID != a.ContainerID || (a.IfName != "" && r.IfName != a.IfName) {
				continue
			}
			if err := os.Remove(filepath.Join(s.cfg.Dir, r.IP.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("ipam: release %s: %w", r.IP, err)
			}
			freed = append(freed, r.IP)
		}
		return nil
	})
	return freed, err
}

// GC keeps only the reservations whose attachment is in valid and frees the
// rest; it is how the store is rebuilt from the runtime's view (CNI GC's
// cni.dev/valid-attachments) after lost DELs or a crash.
func (s *Store) GC(valid []Attachment) ([]Reservation, error) {
	keep := make(map[Attachment]bool, len(valid))
	for _, a := range valid {
		keep[a] = true
	}
	var freed []Reservation
	err := s.withLock(func() error {
		res, err := s.scan()
		if err != nil {
			return err
		}
		for _, r := range res {
			if keep[r.Attachment] {
				continue
			}
			if err := os.Remove(filepath.Join(s.cfg.Dir, r.IP.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("ipam: gc %s: %w", r.IP, err)
			}
			freed = append(freed, r)
		}
		return nil
	})
	return freed, err
}
