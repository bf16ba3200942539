package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
)

var errHeaderTooLarge = errors.New("upstream: response header larger than the limit")

// peekHead waits until br holds one whole response header block (status
// line, fields, empty line) and returns it without consuming it, so that
// http.ReadResponse parses the very bytes scanned here. first reports
// whether any byte arrived: a connection that ends before the first byte
// may be retried, one that ends inside a header may not.
func peekHead(br *bufio.Reader) (head []byte, first bool, err error) {
	if _, err := br.Peek(1); err != nil {
		return nil, false, err
	}
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if end := headEnd(buf, from); end >= 0 {
			return buf[:end], true, nil
		}
		if len(buf) >= br.Size() {
			return nil, true, errHeaderTooLarge
		}
		// The empty line's LF, or the LF before its CR, may be the last
		// byte seen so far.
		from = max(0, len(buf)-2)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, true, fmt.Errorf("upstream: response header cut short: %w", err)
		}
	}
}

// headEnd returns the length of the header block that starts buf, or -1
// when buf does not hold all of it yet. The block ends at the first empty
// line, which textproto accepts as "\r\n" or a bare "\n"; searching starts
// at from.
func headEnd(buf []byte, from int) int {
	for i := from; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return -1
		}
		k := i + j + 1 // just past the LF
		if k < len(buf) && buf[k] == '\n' {
			return k + 1
		}
		if k+1 < len(buf) && buf[k] == '\r' && buf[k+1] == '\n' {
			return k + 2
		}
		i = k
	}
	return -1
}

// connectionTokens reads the Connection header lines of a raw header block
// (continuation lines included, as textproto joins them) and returns the
// header names they nominate as hop-by-hop, and whether one said "close".
// It allocates only for nominated names, which real upstreams rarely send.
//
// Why raw bytes: http.ReadResponse deletes the whole Connection header
// when it contains "close" (transfer.go, shouldClose), taking the other
// tokens with it, and ReverseProxy then forwards the headers they named.
func connectionTokens(head []byte) (names []string, closing bool) {
	i := bytes.IndexByte(head, '\n') + 1 // skip the status line
	inConnection := false
	for i < len(head) {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			break
		}
		line := head[i : i+j]
		i += j + 1
		switch {
		case len(line) > 0 && (line[0] == ' ' || line[0] == '\t'):
			if !inConnection {
				continue
			}
		case len(line) >= len("connection:") && line[10] == ':' && asciiEqualFold(line[:10], "connection"):
			inConnection = true
			line = line[11:]
		default:
			inConnection = false
			continue
		}
		for len(line) > 0 {
			var tok []byte
			tok, line, _ = bytes.Cut(line, []byte{','})
			tok = bytes.Trim(tok, " \t\r")
			switch {
			case len(tok) == 0:
			case asciiEqualFold(tok, "close"):
				closing = true
			case asciiEqualFold(tok, "keep-alive"):
				// an option, not a header of this message worth naming
			default:
				names = append(names, string(tok))
			}
		}
	}
	return names, closing
}

// stripNominated deletes the headers an upstream named in Connection.
func stripNominated(h http.Header, names []string) {
	for _, n := range names {
		h.Del(n)
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
