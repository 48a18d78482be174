package cni

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// pluginBinDir returns a CNI bin dir whose "knet" is this test binary
// (TestMain turns it into the plugin when CNI_COMMAND is set).
func pluginBinDir(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(dir, PluginType)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConfListIsWhatLibcniLoads(t *testing.T) {
	dir := t.TempDir()
	dataDir := t.TempDir()
	if err := WriteConfList(dir, NetConf{PodCIDR: "10.244.1.0/24", DataDir: dataDir, MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != ConfListFile {
		t.Fatalf("conf dir holds %v, want only %s", entries, ConfListFile)
	}
	list, err := libcni.LoadNetworkConf(dir, "knet")
	if err != nil {
		t.Fatalf("libcni cannot load the conflist: %v", err)
	}
	if list.CNIVersion != "1.1.0" || list.Name != "knet" || len(list.Plugins) != 1 {
		t.Fatalf("conflist = %s", list.Bytes)
	}
	pl := list.Plugins[0].Network
	if pl.Type != "knet" || !pl.Capabilities["portMappings"] {
		t.Errorf("plugin entry = %+v, want type knet with the portMappings capability", pl)
	}
	var got NetConf
	if err := json.Unmarshal(list.Plugins[0].Bytes, &got); err != nil {
		t.Fatal(err)
	}
	if got.PodCIDR != "10.244.1.0/24" || got.Bridge != "knet0" || got.MTU != 1450 || got.DataDir != dataDir || !got.hairpin() {
		t.Errorf("plugin fields = %+v", got)
	}
	if _, err := ConfList(NetConf{}); err == nil || !strings.Contains(err.Error(), "podCIDR") {
		t.Errorf("ConfList without podCIDR: err = %v, want one naming podCIDR", err)
	}
	f := false
	b, _ := ConfList(NetConf{PodCIDR: "10.244.1.0/24", HairpinMode: &f})
	if !strings.Contains(string(b), `"hairpinMode": false`) {
		t.Errorf("explicit hairpinMode=false lost:\n%s", b)
	}
}

// TestLibcniExecRoundTrip drives the plugin binary the way containerd does.
func TestLibcniExecRoundTrip(t *testing.T) {
	node := newNS(t, "node")
	pod := newNS(t, "pod")
	confDir, dataDir := t.TempDir(), t.TempDir()
	if err := WriteConfList(confDir, NetConf{PodCIDR: "10.244.20.0/24", DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.LoadNetworkConf(confDir, "knet")
	if err != nil {
		t.Fatal(err)
	}
	cn := libcni.NewCNIConfigWithCacheDir([]string{pluginBinDir(t)}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "libcni-pod", NetNS: pod.Path(), IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 18100, "containerPort": 80, "protocol": "tcp"}}},
	}
	ctx := context.Background()
	t.Cleanup(func() { node.run("nft", "delete", "table", "inet", HostPortTable) })

	err = node.Do(func(ns.NetNS) error {
		if err := cn.GetStatusNetworkList(ctx, list); err != nil {
			t.Errorf("STATUS: %v", err)
		}
		r, err := cn.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return err
		}
		if res.CNIVersion != "1.1.0" || len(res.IPs) != 1 {
			t.Errorf("ADD result = %+v", res)
		}
		if err := cn.CheckNetworkList(ctx, list, rt); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		// GC with this pod valid keeps it; without it frees it.
		if err := cn.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "libcni-pod", IfName: "eth0"}}}); err != nil {
			t.Errorf("GC: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dataDir, res.IPs[0].Address.IP.String())); err != nil {
			t.Errorf("GC freed a valid attachment: %v", err)
		}
		if err := cn.DelNetworkList(ctx, list, rt); err != nil {
			return err
		}
		return cn.DelNetworkList(ctx, list, rt)
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := pod.run("ip", "link", "show", "eth0"); err == nil {
		t.Errorf("eth0 left after DEL: %s", out)
	}
	if out := node.mustRun(t, "nft", "list", "map", "inet", HostPortTable, "hostports"); strings.Contains(out, "18100") {
		t.Errorf("hostPort left after DEL:\n%s", out)
	}
}

func TestBinaryReportsCNIErrorsAndVersions(t *testing.T) {
	bin := filepath.Join(pluginBinDir(t), PluginType)
	ctx := context.Background()
	exec := &invoke.RawExec{Stderr: os.Stderr}

	info, err := invoke.GetVersionInfo(ctx, bin, &invoke.DefaultExec{RawExec: exec, PluginDecoder: version.PluginDecoder{}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(info.SupportedVersions(), ",")
	if got != "0.4.0,1.0.0,1.1.0" {
		t.Errorf("supported versions = %s", got)
	}

	for _, stdin := range []string{"{", `{"cniVersion":"1.1.0","name":"knet","type":"knet","podCIDR":[1]}`, `{"cniVersion":"1.1.0","name":"knet","type":"knet"}`} {
		args := &invoke.Args{Command: "ADD", ContainerID: "c", NetNS: "/nonexistent", IfName: "eth0", Path: filepath.Dir(bin)}
		_, err := exec.ExecPlugin(ctx, bin, []byte(stdin), args.AsEnv())
		var cniErr *types.Error
		if !errors.As(err, &cniErr) || cniErr.Code == 0 || cniErr.Msg == "" {
			t.Errorf("ADD with %q: %v, want a CNI error result", stdin, err)
		} else if strings.Contains(cniErr.Details, "panic") {
			t.Errorf("ADD with %q panicked: %+v", stdin, cniErr)
		}
	}
}
