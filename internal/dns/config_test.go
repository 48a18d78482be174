package dns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := Config{Source: fakeSource(fake.NewClientset())}
		c.Defaults()
		return c
	}
	c := valid()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.ClusterDomain != "cluster.local" || c.Listen != ":53" || c.HealthListen != ":8080" || c.TTL != 5 {
		t.Errorf("defaults = %+v, want cluster.local, :53, :8080, TTL 5", c)
	}
	for name, mutate := range map[string]func(*Config){
		"no source":            func(c *Config) { c.Source = Source{} },
		"incomplete source":    func(c *Config) { c.Source.EndpointSlices = nil },
		"upstream not ip:port": func(c *Config) { c.Upstreams = []string{"dns.google"} },
		"listen without port":  func(c *Config) { c.Listen = "0.0.0.0" },
		"bad domain":           func(c *Config) { c.ClusterDomain = strings.Repeat("a", 64) + ".local" },
		"huge TTL":             func(c *Config) { c.TTL = 86400 },
	} {
		c := valid()
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fd00::53\noptions ndots:5\n"
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := UpstreamsFromResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[fd00::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams = %q, want %q", got, want)
	}
	if err := os.WriteFile(p, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := UpstreamsFromResolvConf(p); err == nil {
		t.Error("a loopback-only resolv.conf gave upstreams")
	}
}
