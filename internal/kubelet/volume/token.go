package volume

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// defaultTokenExpirationSeconds is the API default of
// serviceAccountToken.expirationSeconds.
const defaultTokenExpirationSeconds int64 = 3600

// forbiddenRetryMax is the longest wait between token requests refused as
// Forbidden (50ms doubling up to it: about 1.5s in all).
const forbiddenRetryMax = 800 * time.Millisecond

// tokenKey names one serviceAccountToken source of one pod's volume.
type tokenKey struct {
	uid    types.UID
	volume string
	source int
}

type cachedToken struct {
	token      string
	refreshAt  time.Time
	audience   string
	expiration int64
	account    string
}

// tokenCache requests bound service account tokens through the TokenRequest
// API and reuses each until 80% of its lifetime has passed, like the
// kubelet's token manager.
type tokenCache struct {
	client kubernetes.Interface
	clock  clock.PassiveClock

	mu     sync.Mutex
	tokens map[tokenKey]cachedToken
}

func newTokenCache(c kubernetes.Interface, clk clock.PassiveClock) *tokenCache {
	return &tokenCache{client: c, clock: clk, tokens: map[tokenKey]cachedToken{}}
}

func (c *tokenCache) get(ctx context.Context, pod *corev1.Pod, key tokenKey, src *corev1.ServiceAccountTokenProjection) (string, error) {
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	exp := defaultTokenExpirationSeconds
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	now := c.clock.Now()

	c.mu.Lock()
	cached, ok := c.tokens[key]
	c.mu.Unlock()
	// A changed source (new audience, lifetime or account) needs a new token.
	if ok && now.Before(cached.refreshAt) && cached.audience == src.Audience && cached.expiration == exp && cached.account == account {
		return cached.token, nil
	}

	var audiences []string // empty: the API server's own audiences
	if src.Audience != "" {
		audiences = []string{src.Audience}
	}
	req := &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: &exp,
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			},
		},
	}
	tr, err := c.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, account, req, metav1.CreateOptions{})
	// The API server's node authorizer learns of the pod's binding from its own watch, which
	// can lag the kubelet's: right after scheduling it refuses "a pod scheduled on a different
	// node". Ask again for a short while before failing the sandbox (whose retry waits seconds).
	for delay := 50 * time.Millisecond; apierrors.IsForbidden(err) && delay <= forbiddenRetryMax; delay *= 2 {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		tr, err = c.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, account, req, metav1.CreateOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("request a token for service account %s/%s: %w", pod.Namespace, account, err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("token request for service account %s/%s returned no token", pod.Namespace, account)
	}
	// The server may shorten the lifetime; trust its expiration when given.
	lifetime := time.Duration(exp) * time.Second
	if e := tr.Status.ExpirationTimestamp.Time; !e.IsZero() && e.After(now) {
		lifetime = e.Sub(now)
	}
	c.mu.Lock()
	c.tokens[key] = cachedToken{
		token:      tr.Status.Token,
		refreshAt:  now.Add(lifetime * 8 / 10),
		audience:   src.Audience,
		expiration: exp,
		account:    account,
	}
	c.mu.Unlock()
	return tr.Status.Token, nil
}

// forget drops a pod's tokens when its volumes are torn down.
func (c *tokenCache) forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.tokens {
		if k.uid == uid {
			delete(c.tokens, k)
		}
	}
}
