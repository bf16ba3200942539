package main

import (
	"bytes"
	"log"

	"github.com/rs/zerolog"
)

// newStdLogger routes net/http's own error log (TLS handshakes, header
// parse errors) into zerolog at debug level.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zerologWriter{l}, "", 0)
}

type zerologWriter struct{ l zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.l.Debug().Msg(string(bytes.TrimSpace(p)))
	return len(p), nil
}
