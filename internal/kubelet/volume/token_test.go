package volume

import (
	"context"
	"errors"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

// tokenServer answers token requests Forbidden (as the node authorizer does before it has seen
// the pod's binding) refusals times, then with a token.
func tokenServer(refusals int) (*fake.Clientset, *int) {
	client := fake.NewClientset()
	calls := new(int)
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateAction)
		if ca.GetSubresource() != "token" {
			return false, nil, nil
		}
		*calls++
		if *calls <= refusals {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "default",
				errNodeAuthorizer)
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		tr.Status.Token = "token"
		return true, tr, nil
	})
	return client, calls
}

var errNodeAuthorizer = errors.New("node requested token bound to a pod scheduled on a different node")

func tokenPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: "uid-1"}}
}

func TestTokenRetriedWhileTheNodeAuthorizerLags(t *testing.T) {
	client, calls := tokenServer(2)
	c := newTokenCache(client, clocktesting.NewFakePassiveClock(time.Now()))
	got, err := c.get(context.Background(), tokenPod(), tokenKey{uid: "uid-1", volume: "v"}, &corev1.ServiceAccountTokenProjection{Path: "token"})
	if err != nil {
		t.Fatalf("token after two refusals: %v", err)
	}
	if got != "token" || *calls != 3 {
		t.Errorf("token %q after %d requests, want \"token\" after 3", got, *calls)
	}
}

func TestTokenForbiddenForGoodFailsAfterAFewTries(t *testing.T) {
	client, calls := tokenServer(1000)
	c := newTokenCache(client, clocktesting.NewFakePassiveClock(time.Now()))
	start := time.Now()
	_, err := c.get(context.Background(), tokenPod(), tokenKey{uid: "uid-1", volume: "v"}, &corev1.ServiceAccountTokenProjection{Path: "token"})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want the Forbidden error", err)
	}
	// 50 ms doubling up to forbiddenRetryMax: five retries after the first request.
	if *calls != 6 {
		t.Errorf("%d requests, want 6", *calls)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %s, want about 1.5s", d)
	}
}
