package kubelet

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

func TestLogStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(path, []byte("one\ntwo\nthree\nfour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func(opts api.ContainerLogOpts) string {
		t.Helper()
		rc, err := logStream{path: path, opts: opts, done: closedChan()}.open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for name, tc := range map[string]struct {
		opts api.ContainerLogOpts
		want string
	}{
		"all":            {api.ContainerLogOpts{}, "one\ntwo\nthree\nfour\n"},
		"tail 2":         {api.ContainerLogOpts{Tail: 2}, "three\nfour\n"},
		"tail beyond":    {api.ContainerLogOpts{Tail: 10}, "one\ntwo\nthree\nfour\n"},
		"limit bytes":    {api.ContainerLogOpts{LimitBytes: 6}, "one\ntw"},
		"since future":   {api.ContainerLogOpts{SinceTime: time.Now().Add(time.Hour)}, ""},
		"since recently": {api.ContainerLogOpts{SinceSeconds: 3600}, "one\ntwo\nthree\nfour\n"},
	} {
		if got := read(tc.opts); got != tc.want {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
	if got := read(api.ContainerLogOpts{Tail: 1, Timestamps: true}); len(got) < 25 || got[len(got)-5:] != "four\n" {
		t.Errorf("timestamps: got %q", got)
	}
}

func TestLogStreamFollowEndsWithAttempt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(path, []byte("start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	rc, err := logStream{path: path, opts: api.ContainerLogOpts{Follow: true}, done: done}.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	go func() {
		f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		time.Sleep(300 * time.Millisecond)
		f.Write([]byte("later\n"))
		f.Write([]byte("last, no newline"))
		f.Close()
		close(done)
	}()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "start\nlater\nlast, no newline" {
		t.Errorf("followed log = %q", b)
	}
}

func TestReadTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("a\nb\nc\n"), 0o644)
	if b, _ := readTail(path, 100, 2); string(b) != "b\nc\n" {
		t.Errorf("2 lines = %q", b)
	}
	if b, _ := readTail(path, 3, 0); string(b) != "\nc\n" {
		t.Errorf("3 bytes = %q", b)
	}
}
