// Package netnsrun runs a function on an OS thread switched into a network namespace, so the
// sockets, netlink handles and child processes (nft) it creates belong to that namespace. It
// owns nothing but the thread for the call's duration.
package netnsrun

import (
	"runtime"

	"github.com/vishvananda/netns"
)

// Run calls fn on a locked OS thread inside ns and returns fn's error (or the error of
// entering ns). A thread that cannot be switched back stays locked and dies with its
// goroutine rather than serve other goroutines in the wrong namespace.
func Run(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
