package dns

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Source lists and watches the three kinds of API objects DNS reads, in all
// namespaces.
//
// It is deliberately not a kubernetes.Interface: the clientset and the
// informer factory link and register every API group at start-up, which
// was about 22 MB of the server's RSS for three resources it reads.
type Source struct {
	Namespaces     cache.ListerWatcher // *v1.Namespace
	Services       cache.ListerWatcher // *v1.Service
	EndpointSlices cache.ListerWatcher // *discoveryv1.EndpointSlice
}

func (s Source) validate() error {
	if s.Namespaces == nil || s.Services == nil || s.EndpointSlices == nil {
		return errors.New("dns config: Source is incomplete: build it with NewSource from a rest.Config (in-cluster or a kubeconfig)")
	}
	return nil
}

// NewSource returns a Source reading the API server of rc, with a scheme
// that holds only core/v1 and discovery/v1. It asks for protobuf, which the
// API server sends for all three types: decoding it costs less CPU and
// garbage than JSON when EndpointSlices churn.
func NewSource(rc *rest.Config) (Source, error) {
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{v1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(sch); err != nil {
			return Source{}, fmt.Errorf("dns: API scheme: %w", err)
		}
	}
	metav1.AddToGroupVersion(sch, schema.GroupVersion{Version: "v1"})
	codecs := serializer.NewCodecFactory(sch)
	client := func(gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(rc)
		c.GroupVersion = &gv
		c.APIPath = apiPath
		c.NegotiatedSerializer = codecs.WithoutConversion()
		c.ContentType = runtime.ContentTypeProtobuf
		c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		if c.UserAgent == "" {
			c.UserAgent = "knet-dns"
		}
		rc, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("dns: API client for %s: %w", gv, err)
		}
		return rc, nil
	}
	core, err := client(v1.SchemeGroupVersion, "/api")
	if err != nil {
		return Source{}, err
	}
	discovery, err := client(discoveryv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return Source{}, err
	}
	all := fields.Everything()
	return Source{
		Namespaces:     cache.NewListWatchFromClient(core, "namespaces", metav1.NamespaceAll, all),
		Services:       cache.NewListWatchFromClient(core, "services", metav1.NamespaceAll, all),
		EndpointSlices: cache.NewListWatchFromClient(discovery, "endpointslices", metav1.NamespaceAll, all),
	}, nil
}

// NewSourceFromKubeconfig is NewSource for a kubeconfig file, or for the
// pod's ServiceAccount when kubeconfig is empty.
func NewSourceFromKubeconfig(kubeconfig string) (Source, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return Source{}, fmt.Errorf("dns: Kubernetes client config (pass --kubeconfig outside a pod): %w", err)
	}
	return NewSource(rc)
}
