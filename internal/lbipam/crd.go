package lbipam

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

//go:embed crd.yaml
var crdYAML []byte

// PoolResource is the IPAddressPool resource, for the dynamic client.
var PoolResource = schema.GroupVersionResource{Group: "knet.dev", Version: "v1beta1", Resource: "ipaddresspools"}

// PoolCRD returns the IPAddressPool CustomResourceDefinition (crd.yaml).
func PoolCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(crdYAML, crd); err != nil {
		return nil, fmt.Errorf("decode embedded crd.yaml: %w", err)
	}
	return crd, nil
}

// ensureCRD creates the IPAddressPool CRD if it is missing (it never
// updates one that exists: an administrator may have installed a newer
// one), then waits until the API serves the resource.
func ensureCRD(ctx context.Context, ext apiextensionsclient.Interface, dyn dynamic.Interface) error {
	crd, err := PoolCRD()
	if err != nil {
		return err
	}
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	if _, err := crds.Get(ctx, crd.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s (does the controller's identity have RBAC to create customresourcedefinitions?): %w", crd.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("get CRD %s: %w", crd.Name, err)
	}
	// Established is what matters, but a List is the condition the pool
	// informer actually needs.
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, lastErr = dyn.Resource(PoolResource).List(ctx, metav1.ListOptions{Limit: 1})
		return lastErr == nil, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s created but the API does not serve %s (last error: %v): %w", crd.Name, PoolResource, lastErr, err)
	}
	return nil
}
