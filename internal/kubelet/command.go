package kubelet

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// errNoCommand is reported as the container's Waiting message: the image is
// not mapped, so knet does not know its ENTRYPOINT.
type errNoCommand struct{ image string }

func (e errNoCommand) Error() string {
	return fmt.Sprintf("image %q is not mapped to a binary and the container sets no command: "+
		"set `command:` in the container, or map the image with `knet up --image-map FILE`", e.image)
}

// containerArgv combines the container's command/args with the image's
// ENTRYPOINT/CMD by the Kubernetes rules: command replaces the ENTRYPOINT
// and drops the CMD, args replace the CMD. $(VAR) references are expanded
// from env the way the kubelet does.
func containerArgv(c *corev1.Container, img Image, mapped bool, env map[string]string) ([]string, error) {
	var cmd, args []string
	switch {
	case len(c.Command) > 0:
		cmd, args = c.Command, c.Args
	case len(c.Args) > 0:
		cmd, args = img.Entrypoint, c.Args
	default:
		cmd, args = img.Entrypoint, img.Cmd
	}
	if len(c.Command) == 0 && !mapped {
		return nil, errNoCommand{image: c.Image}
	}
	mapping := expansion.MappingFuncFor(env)
	argv := make([]string, 0, len(cmd)+len(args))
	for _, s := range cmd {
		argv = append(argv, expansion.Expand(s, mapping))
	}
	for _, s := range args {
		argv = append(argv, expansion.Expand(s, mapping))
	}
	if len(argv) == 0 {
		return nil, errNoCommand{image: c.Image}
	}
	return argv, nil
}
