package dns

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// wireEntry is a packed cluster answer: everything after the question
// section, with names compressed against the question, so it can be served
// to any query for the same name and type by copying bytes (the question
// itself is copied from the query, which keeps the client's case).
type wireEntry struct {
	gen        uint64 // snapshot the answer was computed from
	rcode      uint8
	aa, ra     bool
	an, ns, ar uint16
	body       []byte
}

// wireCache maps wire qname (case as asked) + qtype to packed cluster answers.
// Sharded so readers on several sockets rarely meet on one lock.
type wireCache struct {
	seed     maphash.Seed
	shards   [64]wireShard
	perShard int
}

type wireShard struct {
	mu sync.RWMutex
	m  map[string]*wireEntry
}

func newWireCache(size int) *wireCache {
	c := &wireCache{seed: maphash.MakeSeed(), perShard: max(size/64, 16)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*wireEntry)
	}
	return c
}

func (c *wireCache) shard(key []byte) *wireShard {
	return &c.shards[maphash.Bytes(c.seed, key)%uint64(len(c.shards))]
}

func (c *wireCache) get(key []byte) *wireEntry {
	sh := c.shard(key)
	sh.mu.RLock()
	e := sh.m[string(key)]
	sh.mu.RUnlock()
	return e
}

func (c *wireCache) put(key []byte, e *wireEntry) {
	sh := c.shard(key)
	sh.mu.Lock()
	if len(sh.m) >= c.perShard {
		// Full: drop an arbitrary entry. Random names (a flood of
		// NXDOMAINs) then cannot grow memory, and hot names come back on
		// their next miss.
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[string(key)] = e
	sh.mu.Unlock()
}

// msgCache holds upstream answers for their TTL (RFC 2308 for negative
// ones), so repeated external names do not cost a round trip.
type msgCache struct {
	mu   sync.Mutex
	m    map[msgKey]msgEntry
	size int
	now  func() time.Time
}

type msgKey struct {
	name  string // lowercase FQDN
	qtype uint16
}

type msgEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// Caps as CoreDNS's cache plugin: one hour for answers, 30 minutes for
// denials.
const (
	maxSuccessTTL = 3600
	maxDenialTTL  = 1800
)

func newMsgCache(size int, now func() time.Time) *msgCache {
	return &msgCache{m: make(map[msgKey]msgEntry), size: size, now: now}
}

// get returns a copy of the cached answer with TTLs reduced by its age.
func (c *msgCache) get(k msgKey) *dns.Msg {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	now := c.now()
	if !now.Before(e.expires) {
		return nil
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	m := e.msg.Copy()
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Ttl > age {
				h.Ttl -= age
			} else {
				h.Ttl = 0
			}
		}
	}
	return m
}

// put caches m if it can be cached: a success with records, or a denial
// (NXDOMAIN/NODATA) with an SOA. Errors are not cached.
func (c *msgCache) put(k msgKey, m *dns.Msg) {
	ttl, ok := cacheTTL(m)
	if !ok || ttl == 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.size {
		for old, e := range c.m {
			if !now.Before(e.expires) || len(c.m) >= c.size {
				delete(c.m, old)
			}
			if len(c.m) < c.size*3/4 {
				break
			}
		}
	}
	c.m[k] = msgEntry{msg: m, stored: now, expires: now.Add(time.Duration(ttl) * time.Second)}
}

func cacheTTL(m *dns.Msg) (uint32, bool) {
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl := uint32(maxSuccessTTL)
		for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
			for _, rr := range sec {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
		return ttl, true
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return min(soa.Hdr.Ttl, soa.Minttl, maxDenialTTL), true
			}
		}
	}
	return 0, false
}
