package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// readTail returns at most maxBytes from the end of a file, and at most
// maxLines lines when maxLines > 0.
func readTail(path string, maxBytes int64, maxLines int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-maxBytes, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, err
	}
	if maxLines > 0 {
		b = lastLines(b, maxLines)
	}
	return b, nil
}

// lastLines returns the last n lines of b (a trailing newline does not
// start a new line).
func lastLines(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// logStream streams one attempt's log file with the kubelet's options.
// Container output is stored raw, so timestamps and since are best effort:
// lines already written carry the file's modification time, followed lines
// the time they were read.
type logStream struct {
	path string
	opts api.ContainerLogOpts
	// done is closed when the attempt ended (follow stops at EOF then).
	done <-chan struct{}
	// fromEnd streams only what is written from now on (attach).
	fromEnd bool
}

func (s logStream) open(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	since := s.opts.SinceTime
	if s.opts.SinceSeconds > 0 {
		since = time.Now().Add(-time.Duration(s.opts.SinceSeconds) * time.Second)
	}
	start := int64(0)
	if s.fromEnd || !since.IsZero() && fi.ModTime().Before(since) {
		start = fi.Size()
	} else if s.opts.Tail > 0 {
		// virtual-kubelet parses an absent tailLines and tailLines=0 alike
		// (0), so 0 means the whole log.
		start = tailOffset(f, fi.Size(), s.opts.Tail)
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		pw.CloseWithError(s.copy(ctx, f, pw, fi.ModTime()))
	}()
	return pr, nil
}

// tailOffset finds where the last n lines start.
func tailOffset(f *os.File, size int64, n int) int64 {
	const chunk = 64 * 1024
	pos := size
	lines := 0
	buf := make([]byte, chunk)
	// A trailing newline ends the last line; it does not start another.
	skipFirst := true
	for pos > 0 {
		sz := min(int64(chunk), pos)
		pos -= sz
		if _, err := f.ReadAt(buf[:sz], pos); err != nil && err != io.EOF {
			return 0
		}
		for i := sz - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				skipFirst = false
				continue
			}
			if skipFirst {
				skipFirst = false
				continue
			}
			lines++
			if lines == n {
				return pos + i + 1
			}
		}
	}
	return 0
}

func (s logStream) copy(ctx context.Context, f *os.File, w io.Writer, mtime time.Time) error {
	limit := int64(s.opts.LimitBytes)
	written := int64(0)
	r := bufio.NewReaderSize(f, 32*1024)
	var partial []byte
	emit := func(line []byte, ts time.Time) (bool, error) {
		if s.opts.Timestamps {
			line = append([]byte(ts.UTC().Format(time.RFC3339Nano)+" "), line...)
		}
		if limit > 0 && written+int64(len(line)) > limit {
			line = line[:limit-written]
		}
		n, err := w.Write(line)
		written += int64(n)
		return limit > 0 && written >= limit, err
	}
	ts := mtime
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			partial = append(partial, line...)
			if bytes.HasSuffix(partial, []byte("\n")) {
				stop, werr := emit(partial, ts)
				partial = nil
				if werr != nil || stop {
					return werr
				}
			}
		}
		if err == nil {
			continue
		}
		if err != io.EOF {
			return err
		}
		if !s.opts.Follow {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			// Drain what the attempt wrote before it ended.
			rest, _ := io.ReadAll(r)
			partial = append(partial, rest...)
			s.opts.Follow = false
			continue
		case <-time.After(200 * time.Millisecond):
			ts = time.Now()
		}
	}
	if len(partial) > 0 {
		_, err := emit(partial, ts)
		return err
	}
	return nil
}
