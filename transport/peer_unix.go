//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package transport

import (
	"net"
	"syscall"
)

// peerCheck tells, without blocking, whether an idle connection is still
// quiet: no FIN, no reset, no unsolicited bytes. net/http's Transport
// learns this from a reader goroutine per connection; one non-blocking
// MSG_PEEK syscall when the connection is picked costs far less.
//
// Why it matters: an upstream with a shorter keep-alive timeout than ours
// (Node's is 5s) closes idle connections; a POST sent on one fails and may
// not be retried. Checking first turns that into a fresh dial.
type peerCheck struct {
	raw   syscall.RawConn
	probe func(fd uintptr) bool // made once per connection: no allocation per check
	ok    bool
	buf   [1]byte
}

func newPeerCheck(nc net.Conn) peerCheck {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return peerCheck{}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return peerCheck{}
	}
	return peerCheck{raw: raw}
}

func (pc *peerCheck) quiet() bool {
	if pc.raw == nil {
		return true
	}
	if pc.probe == nil {
		pc.probe = func(fd uintptr) bool {
			_, _, err := syscall.Recvfrom(int(fd), pc.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			pc.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
			return true // never wait for readability
		}
	}
	pc.ok = false
	if err := pc.raw.Read(pc.probe); err != nil {
		return false
	}
	return pc.ok
}
