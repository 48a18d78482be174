package dns

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// forwarder resolves names outside the cluster domain through the upstream
// resolvers: plain DNS over UDP, retried over TCP when the answer is
// truncated, with answers cached for their TTL.
type forwarder struct {
	upstreams []string
	udp, tcp  *dns.Client
	cache     *msgCache
}

// upstreamTimeout bounds one exchange; a client's own resolver retries
// after about 5 s, so trying two upstreams must fit in that.
const upstreamTimeout = 2 * time.Second

func newForwarder(upstreams []string, cache *msgCache) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		udp:       &dns.Client{Net: "udp", Timeout: upstreamTimeout, UDPSize: 1232},
		tcp:       &dns.Client{Net: "tcp", Timeout: upstreamTimeout},
		cache:     cache,
	}
}

// cached returns a cached upstream answer for (name, qtype), or nil.
func (f *forwarder) cached(name string, qtype uint16) *dns.Msg {
	return f.cache.get(msgKey{strings.ToLower(name), qtype})
}

// lookup returns the upstream answer for (name, qtype), from the cache when
// it is fresh. The returned message is the caller's to modify.
func (f *forwarder) lookup(name string, qtype uint16) (*dns.Msg, error) {
	key := msgKey{strings.ToLower(name), qtype}
	if m := f.cache.get(key); m != nil {
		return m, nil
	}
	q := new(dns.Msg)
	q.SetQuestion(key.name, qtype)
	q.SetEdns0(1232, false)
	var errs []error
	var last *dns.Msg
	for _, up := range f.upstreams {
		r, err := f.exchange(q, up)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		last = r
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			continue // another upstream may do better
		}
		break
	}
	if last == nil {
		return nil, fmt.Errorf("forward %s %s: every upstream failed: %w", key.name, dns.TypeToString[qtype], errors.Join(errs...))
	}
	// Our OPT is per client, never cached.
	extra := last.Extra[:0:0]
	for _, rr := range last.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	last.Extra = extra
	f.cache.put(key, last)
	return last.Copy(), nil
}

func (f *forwarder) exchange(q *dns.Msg, upstream string) (*dns.Msg, error) {
	r, _, err := f.udp.Exchange(q, upstream)
	if err == nil && r.Truncated {
		r, _, err = f.tcp.Exchange(q, upstream)
	}
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", upstream, err)
	}
	// The client checks the ID; also check the question, so a stray
	// answer for another name cannot poison the cache.
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) || r.Question[0].Qtype != q.Question[0].Qtype {
		return nil, fmt.Errorf("upstream %s: answer for a different question", upstream)
	}
	return r, nil
}
