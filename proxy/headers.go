package proxy

import (
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// requestID keeps a sane client X-Request-Id (1–128 characters of
// [A-Za-z0-9._:+/=-]) and makes a new one otherwise.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); saneID(id) {
		return id
	}
	var b [16]byte
	lo, hi := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(lo>>(8*i)), byte(hi>>(8*i))
	}
	return hex.EncodeToString(b[:])
}

func saneID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._:+/=-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// trustedNets are server.trusted_proxies.
type trustedNets []netip.Prefix

func parseTrusted(cidrs []string) trustedNets {
	var t trustedNets
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			t = append(t, p.Masked())
		} else if a, err := netip.ParseAddr(c); err == nil {
			t = append(t, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return t
}

func (t trustedNets) contains(remoteAddr string) bool {
	if len(t) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the caller's address: the peer, or, behind a trusted
// proxy, the nearest address in X-Forwarded-For that is not trusted.
func (t trustedNets) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !t.contains(r.RemoteAddr) {
		return host
	}
	xff := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(xff) - 1; i >= 0; i-- {
		ip := strings.TrimSpace(xff[i])
		if ip != "" && !t.contains(net.JoinHostPort(ip, "0")) {
			return ip
		}
	}
	return host
}

// refuseUpgrade strips any upgrade but WebSocket, so that the request goes
// upstream as plain HTTP/1.1: h2c and others are never passed through, and
// HTTP2-Settings is never forwarded.
func refuseUpgrade(r *http.Request) {
	r.Header.Del("Http2-Settings")
	if !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") && r.Header.Get("Upgrade") == "" {
		return
	}
	if strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), "websocket") &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return
	}
	r.Header.Del("Upgrade")
	var kept []string
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "upgrade") && !strings.EqualFold(tok, "http2-settings") {
				kept = append(kept, tok)
			}
		}
	}
	if len(kept) > 0 {
		r.Header.Set("Connection", strings.Join(kept, ", "))
	} else {
		r.Header.Del("Connection")
	}
}

// namedInConnection reports whether the client listed name as hop-by-hop.
func namedInConnection(h http.Header, name string) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], name)
}
