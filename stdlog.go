package main

import (
	"bytes"
	"log"

	"github.com/rs/zerolog"
)

// newStdLogger routes net/http's own error log (TLS handshakes, header
// parse errors) into zerolog at debug level.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zerologWriter{l, zerolog.DebugLevel}, "", 0)
}

// routeStdLog sends the standard log package's output into l at warn
// level and returns the function that puts it back. Some of the standard
// library logs only there: net/http's Transport writes "Unsolicited
// response received on idle HTTP channel…" (with the upstream's bytes)
// when an upstream speaks on an idle connection. Routed, every line
// breakwater prints is one JSON (or console) entry. The log package's
// output is process-wide, hence the restore: tests call run in-process.
func routeStdLog(l zerolog.Logger) (restore func()) {
	out, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	log.SetOutput(zerologWriter{l, zerolog.WarnLevel})
	log.SetFlags(0) // zerolog adds its own time
	log.SetPrefix("")
	return func() {
		log.SetOutput(out)
		log.SetFlags(flags)
		log.SetPrefix(prefix)
	}
}

type zerologWriter struct {
	l     zerolog.Logger
	level zerolog.Level
}

func (z zerologWriter) Write(p []byte) (int, error) {
	z.l.WithLevel(z.level).Msg(string(bytes.TrimSpace(p)))
	return len(p), nil
}
