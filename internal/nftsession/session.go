// Package nftsession runs knftables transactions through one long-lived `nft -i` process
// instead of starting nft for each one.
//
// knftables runs `nft -f -` per transaction. On a table of a thousand chains that costs about
// 28 ms for a three-line change, and most of it is not the change: starting and linking the
// binary, and on exit a wait for an RCU grace period that the kernel inserts when the netlink
// socket of a process that just deleted rules is closed. A session keeps one nft process and
// one socket: the same change takes about 10 ms.
//
// Each transaction is written to a memfd that the process holds as fd 3 and run with
// `include "/dev/fd/3"`, which nft parses as one batch, so the transaction stays atomic;
// typing it into the interactive prompt instead would read it one byte per read(2). A
// `describe` command after it marks the end of its output. Everything but Run is knftables'
// own, and a transaction that nft rejects is run once more through knftables' Run, so callers
// get knftables' errors (IsNotFound, IsAlreadyExists) as before. Transactions over 256 KiB also
// go through knftables' Run, so the long-lived process never keeps the memory of parsing them.
package nftsession

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// maxScript is the largest transaction the session runs; a larger one (a full sync of hundreds
// of Services) goes through knftables' own one-shot nft, whose memory for parsing it is returned
// when it exits: after a 1.3 MB full sync of 1k Services a long-lived nft keeps 55 MB, against
// 15 MB after only small transactions.
var maxScript = 256 << 10

// maxRuns bounds the transactions one process serves: nft's line editor keeps every input line
// in its history, so a process that served forever would grow without bound.
var maxRuns = 10000

// sentinel is a command whose output (one line that starts with sentinelOutput) ends every
// transaction's output. It needs no kernel access.
const (
	sentinel       = "describe ip saddr"
	sentinelOutput = "payload expression, datatype ipv4_addr"
)

// Session is a knftables.Interface whose Run goes through a persistent nft process. The
// process is started by the first Run, in the network namespace of the calling thread, and
// ends with Close. Safe for concurrent use.
type Session struct {
	knftables.Interface
	nft string

	mu   sync.Mutex
	proc *process
}

// New wraps inner, which must be a knftables.New of the same namespace. It only looks up the
// nft binary; nothing runs until Run.
func New(inner knftables.Interface) (*Session, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftsession: %w", err)
	}
	return &Session{Interface: inner, nft: path}, nil
}

// Run applies tx atomically, as knftables' Run does.
func (s *Session) Run(ctx context.Context, tx *knftables.Transaction) error {
	if tx.NumOperations() > maxScript/16 {
		// Over maxScript for sure (every operation renders to more than 16 bytes): skip
		// rendering it here, since knftables' Run renders it again.
		return s.Interface.Run(ctx, tx)
	}
	script := tx.String()
	// knftables records an invalid operation as a trailing "# ERROR:" comment, which nft
	// would skip; its own Run returns that error without running anything.
	if tx.NumOperations() == 0 || len(script) > maxScript || strings.Contains(script, "# ERROR: ") {
		return s.Interface.Run(ctx, tx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		p, err := start(s.nft)
		if err != nil {
			return err
		}
		s.proc = p
	}
	out, err := s.proc.run(ctx, script)
	if err != nil {
		// The process is gone or stuck, and whether tx was committed is unknown.
		s.endProcess()
		return fmt.Errorf("nft session: %w", err)
	}
	if s.proc.runs >= maxRuns {
		s.endProcess()
	}
	if strings.Contains(out, "Error:") {
		// nft rejected the batch, so nothing of it was applied. Running it once more the
		// usual way returns the error in knftables' form.
		return s.Interface.Run(ctx, tx)
	}
	return nil
}

// Close ends the nft process, if one runs. The Session stays usable: a later Run starts a new
// one.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endProcess()
	return nil
}

// endProcess stops the nft process, if any; the next Run starts another. Call with s.mu held.
func (s *Session) endProcess() {
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
}

// process is one `nft -i` with its script memfd and output pipe.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	outR   *os.File
	script *os.File
	exited chan struct{}
	runs   int
}

func start(nft string) (*process, error) {
	fd, err := unix.MemfdCreate("knet-nft-transaction", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("nft session: memfd: %w", err)
	}
	script := os.NewFile(uintptr(fd), "nft-transaction")
	outR, outW, err := os.Pipe()
	if err != nil {
		script.Close()
		return nil, fmt.Errorf("nft session: pipe: %w", err)
	}
	cmd := exec.Command(nft, "-i")
	// HOME=/dev/null: nft saves its line history to $HOME/.nft.history on exit; this makes
	// that fail instead of writing a file.
	cmd.Env = []string{"HOME=/dev/null"}
	cmd.ExtraFiles = []*os.File{script} // fd 3
	cmd.Stdout, cmd.Stderr = outW, outW
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	outW.Close()
	if err != nil {
		script.Close()
		outR.Close()
		return nil, fmt.Errorf("nft session: start %s -i: %w", nft, err)
	}
	p := &process{cmd: cmd, stdin: stdin, out: bufio.NewReader(outR), outR: outR, script: script, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// run applies one script and returns nft's output for it (empty on success).
func (p *process) run(ctx context.Context, script string) (string, error) {
	p.runs++
	if err := p.script.Truncate(0); err != nil {
		return "", err
	}
	if _, err := p.script.WriteAt([]byte(script), 0); err != nil {
		return "", err
	}
	if _, err := io.WriteString(p.stdin, "include \"/dev/fd/3\"\n"+sentinel+"\n"); err != nil {
		return "", err
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var b strings.Builder
		for {
			line, err := p.out.ReadString('\n')
			if err != nil {
				done <- result{b.String(), fmt.Errorf("nft exited: %w: %s", err, b.String()+line)}
				return
			}
			if strings.HasPrefix(line, sentinelOutput) {
				done <- result{b.String(), nil}
				return
			}
			b.WriteString(line)
		}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		// stop kills the process, which ends the reader.
		return "", context.Cause(ctx)
	}
}

// stop closes nft's input, which ends it, and kills it if it has not exited within a second.
func (p *process) stop() {
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.outR.Close()
	p.script.Close()
}
