//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package transport

import "net"

// peerCheck has no non-blocking peek on this platform: an idle connection
// the upstream closed is found out when a request fails on it, and the
// retry rule of H1.RoundTrip applies.
type peerCheck struct{}

func newPeerCheck(net.Conn) peerCheck { return peerCheck{} }

func (*peerCheck) quiet() bool { return true }
