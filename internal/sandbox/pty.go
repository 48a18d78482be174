package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openPTY allocates a pseudo-terminal from the devpts instance of ptmx (the
// pod's own, so the terminal's name resolves inside the pod). The terminal
// side is opened through the master (TIOCGPTPEER), not by a path that only
// exists in the pod's mount namespace.
func openPTY(ptmx string) (master, terminal *os.File, err error) {
	master, err = os.OpenFile(ptmx, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", ptmx, err)
	}
	var peer int
	var ioctlErr error
	err = control(master, func(fd int) {
		if ioctlErr = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); ioctlErr != nil {
			return
		}
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER,
			uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
		if errno != 0 {
			ioctlErr = errno
		}
		peer = int(r)
	})
	if err = errors.Join(err, ioctlErr); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("open pseudo-terminal: %w", err)
	}
	return master, os.NewFile(uintptr(peer), "pty"), nil
}

// setTermSize resizes the terminal behind master.
func setTermSize(master *os.File, size TermSize) error {
	var ioctlErr error
	err := control(master, func(fd int) {
		ioctlErr = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
	if err = errors.Join(err, ioctlErr); err != nil {
		return fmt.Errorf("resize terminal to %dx%d: %w", size.Width, size.Height, err)
	}
	return nil
}

// control runs fn on f's descriptor without switching f to blocking mode
// (which f.Fd() would do, defeating the poller reads of the master rely on).
func control(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// copyTerminal copies the master's output to w until the terminal side is
// closed by every process (reads then fail with EIO, which is the normal end).
func copyTerminal(w io.Writer, master *os.File) error {
	_, err := io.Copy(w, master)
	if errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
