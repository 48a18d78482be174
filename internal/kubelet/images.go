package kubelet

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Image says how to run an image without pulling it: knet has no image store,
// so an image is a host binary mounted into the pod plus the image's
// ENTRYPOINT and CMD.
type Image struct {
	// Binary is a host path bind-mounted read-only at Path inside the pod.
	// Empty means the image needs nothing mounted (its command is on the host).
	Binary string
	// Path is where Binary appears inside the pod, e.g. "/agnhost".
	Path string
	// Entrypoint is the image's ENTRYPOINT, e.g. ["/agnhost"].
	Entrypoint []string
	// Cmd is the image's CMD, e.g. ["pause"].
	Cmd []string
	// Files are more files of the image, host path → path in the pod, mounted read-only
	// (e.g. agnhost's /localhost.crt and /localhost.key, which its porter serves TLS with).
	Files map[string]string `json:"files,omitempty"`
}

// imageRule maps a repository pattern to an Image.
type imageRule struct {
	pattern string
	image   Image
}

// ImageMap resolves image references to Images. It matches on the
// repository only (tag and digest are ignored). A pattern containing "/"
// matches that repository and every repository below it, and the longest
// matching pattern wins; a pattern without "/" (like "knet") matches any
// repository whose last path element it equals, on any registry.
// Later rules replace earlier rules with the same pattern.
type ImageMap struct {
	rules []imageRule
}

// Set adds or replaces the rule for pattern.
func (m *ImageMap) Set(pattern string, img Image) {
	pattern = strings.TrimSuffix(repository(pattern), "/")
	if img.Binary != "" && img.Path == "" {
		img.Path = "/" + path.Base(img.Binary)
	}
	for i := range m.rules {
		if m.rules[i].pattern == pattern {
			m.rules[i].image = img
			return
		}
	}
	m.rules = append(m.rules, imageRule{pattern: pattern, image: img})
}

// Lookup returns the Image for an image reference such as
// "registry.k8s.io/e2e-test-images/agnhost:2.53".
func (m ImageMap) Lookup(ref string) (Image, bool) {
	repo := repository(ref)
	best, bestLen := Image{}, -1
	for _, r := range m.rules {
		var n int
		switch {
		case !strings.Contains(r.pattern, "/"):
			if path.Base(repo) != r.pattern {
				continue
			}
			n = len(r.pattern)
		case repo == r.pattern || strings.HasPrefix(repo, r.pattern+"/"):
			n = len(r.pattern)
		default:
			continue
		}
		if n >= bestLen {
			best, bestLen = cloneImage(r.image), n
		}
	}
	return best, bestLen >= 0
}

func cloneImage(img Image) Image {
	img.Entrypoint = append([]string(nil), img.Entrypoint...)
	img.Cmd = append([]string(nil), img.Cmd...)
	return img
}

// repository strips the tag and digest from an image reference. A port in
// the registry host ("localhost:5000/x") is kept.
func repository(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i >= 0 && !strings.Contains(ref[i:], "/") {
		ref = ref[:i]
	}
	return ref
}

// DefaultImages maps the images a knet cluster runs out of the box:
// agnhost (the upstream e2e test image), pause, and knet itself (cluster
// add-ons run as the knet binary).
func DefaultImages(knetBinary, agnhostBinary string) ImageMap {
	var m ImageMap
	agnhost := Image{
		Binary: agnhostBinary, Path: "/agnhost",
		Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
	}
	// hack/build.sh puts the image's extra files in agnhost-files/ beside the binary.
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		src := filepath.Join(filepath.Dir(agnhostBinary), "agnhost-files", f)
		if _, err := os.Stat(src); err == nil && agnhostBinary != "" {
			if agnhost.Files == nil {
				agnhost.Files = map[string]string{}
			}
			agnhost.Files[src] = "/" + f
		}
	}
	m.Set("registry.k8s.io/e2e-test-images/agnhost", agnhost)
	// pause sleeps until SIGTERM; `knet pause` does exactly that.
	for _, p := range []string{"registry.k8s.io/pause", "k8s.gcr.io/pause"} {
		m.Set(p, Image{Binary: knetBinary, Path: "/knet", Entrypoint: []string{"/knet", "pause"}})
	}
	knet := Image{Binary: knetBinary, Path: "/knet", Entrypoint: []string{"/knet"}}
	// `knet dns` execs the lean DNS server beside it (/knet-dns in the pod) when it is there.
	if lean := filepath.Join(filepath.Dir(knetBinary), "knet-dns"); knetBinary != "" {
		if _, err := os.Stat(lean); err == nil {
			knet.Files = map[string]string{lean: "/knet-dns"}
		}
	}
	m.Set("knet", knet)
	return m
}

// imageMapEntry is one entry of an image map file.
type imageMapEntry struct {
	Image      string   `json:"image"`
	Binary     string   `json:"binary,omitempty"`
	Path       string   `json:"path,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// LoadImageMap reads a YAML or JSON list of
// {image, binary, path, entrypoint, cmd} entries and returns base with those
// entries added (an entry replaces a base rule with the same image pattern).
func LoadImageMap(file string, base ImageMap) (ImageMap, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return ImageMap{}, fmt.Errorf("read image map: %w", err)
	}
	var entries []imageMapEntry
	if err := yaml.UnmarshalStrict(data, &entries); err != nil {
		return ImageMap{}, fmt.Errorf("parse image map %s (want a list of {image, binary, path, entrypoint, cmd}): %w", file, err)
	}
	out := ImageMap{rules: append([]imageRule(nil), base.rules...)}
	for i, e := range entries {
		if e.Image == "" {
			return ImageMap{}, fmt.Errorf("image map %s entry %d: image is required", file, i)
		}
		if e.Binary != "" {
			if _, err := os.Stat(e.Binary); err != nil {
				return ImageMap{}, fmt.Errorf("image map %s entry %q: binary: %w", file, e.Image, err)
			}
		}
		if e.Path != "" && !path.IsAbs(e.Path) {
			return ImageMap{}, fmt.Errorf("image map %s entry %q: path %q must be absolute", file, e.Image, e.Path)
		}
		out.Set(e.Image, Image{Binary: e.Binary, Path: e.Path, Entrypoint: e.Entrypoint, Cmd: e.Cmd})
	}
	return out, nil
}
