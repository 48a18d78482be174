package controlplane

import (
	"net"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{DataDir: "/var/lib/knet"}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.BindAddress != "127.0.0.1" || !c.AdvertiseAddress.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("addresses = %s, %s; want loopback for both", c.BindAddress, c.AdvertiseAddress)
	}
	if c.EtcdPort != c.SecurePort+10000 || c.EtcdPeerPort != c.EtcdPort+1 {
		t.Errorf("etcd ports = %d, %d for SecurePort %d", c.EtcdPort, c.EtcdPeerPort, c.SecurePort)
	}
	ip, err := firstServiceIP(c.ServiceCIDR)
	if err != nil || ip.String() != "10.96.0.1" {
		t.Errorf("kubernetes Service IP of %s = %v, %v; want 10.96.0.1", c.ServiceCIDR, ip, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"underlay gateway", func(c *Config) { c.AdvertiseAddress = net.ParseIP("172.18.0.1") }, ""},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir is required"},
		{"relative data dir", func(c *Config) { c.DataDir = "state" }, "absolute"},
		{"bind all", func(c *Config) { c.BindAddress = "0.0.0.0" }, "every interface"},
		{"advertise unspecified", func(c *Config) { c.AdvertiseAddress = net.IPv4zero }, "unspecified"},
		{"advertise inside pods", func(c *Config) { c.AdvertiseAddress = net.ParseIP("10.244.3.1") }, "inside ClusterCIDR"},
		{"port clash", func(c *Config) { c.EtcdPort = c.SecurePort }, "give each its own port"},
		{"port range", func(c *Config) { c.EtcdPeerPort = 70000 }, "outside 1-65535"},
		{"overlap", func(c *Config) { c.ClusterCIDR = "10.96.0.0/16" }, "overlaps"},
		{"service too big", func(c *Config) { c.ServiceCIDR = "10.0.0.0/8" }, "between /12 and /28"},
		{"host bits", func(c *Config) { c.ClusterCIDR = "10.244.0.1/16" }, "host bits"},
		{"mask not longer", func(c *Config) { c.NodeCIDRMaskSize = 16 }, "NodeCIDRMaskSize"},
		{"too many nodes", func(c *Config) {
			c.ClusterCIDR = "10.0.0.0/9"
			c.ServiceCIDR = "192.168.0.0/16"
			c.NodeCIDRMaskSize = 28
		}, "65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{DataDir: "/var/lib/knet"}
			c.Defaults()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}
