package cni

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// TestMain doubles the test binary as the plugin binary, so the libcni tests
// exec it exactly as a runtime execs knet.
func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" {
		PluginMain()
		return
	}
	os.Exit(m.Run())
}

var testPlugin = &Plugin{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}

type testNS struct {
	ns.NetNS
	name string
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root for network namespaces")
	}
}

// newNS creates a named network namespace that is deleted when the test ends.
func newNS(t testing.TB, role string) *testNS {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("knettest-cni-%s-%s", role, randHex(4))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &testNS{NetNS: n, name: name}
}

// inNS runs a command inside the namespace and returns its combined output.
func (n *testNS) run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *testNS) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

type confOpts struct {
	cidr, dataDir string
	ports         []PortMapping
	extra         map[string]any
}

func pluginConf(t testing.TB, o confOpts) []byte {
	t.Helper()
	m := map[string]any{
		"cniVersion": "1.1.0", "name": "knet", "type": "knet",
		"podCIDR": o.cidr, "dataDir": o.dataDir, "bridge": "knet0",
	}
	if len(o.ports) > 0 {
		m["runtimeConfig"] = map[string]any{"portMappings": o.ports}
	}
	for k, v := range o.extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func args(id string, pod *testNS, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: pod.Path(), IfName: "eth0", StdinData: conf}
}

// add runs ADD in-process inside the node namespace.
func add(t testing.TB, node *testNS, a *skel.CmdArgs) (*current.Result, error) {
	t.Helper()
	var res *current.Result
	err := node.Do(func(ns.NetNS) error {
		var err error
		res, err = testPlugin.Add(a)
		return err
	})
	return res, err
}

func del(t testing.TB, node *testNS, a *skel.CmdArgs) error {
	t.Helper()
	return node.Do(func(ns.NetNS) error { return testPlugin.Del(a) })
}

func withPrevResult(t testing.TB, conf []byte, res *current.Result) []byte {
	t.Helper()
	var m map[string]any
	json.Unmarshal(conf, &m)
	rb, _ := json.Marshal(res)
	var rm map[string]any
	json.Unmarshal(rb, &rm)
	m["prevResult"] = rm
	b, _ := json.Marshal(m)
	return b
}
