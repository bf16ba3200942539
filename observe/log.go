package observe

import (
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the process logger: zerolog on w, JSON or (format
// "console") human-readable. An unknown level means info.
func NewLogger(w zerolog.LevelWriter, level, format string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	var out zerolog.LevelWriter = w
	if format == "console" {
		out = zerolog.MultiLevelWriter(zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339})
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}
