package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// scalar is implemented by the config value types that parse from one YAML
// scalar. Parse errors never echo the input: it may hold a secret.
type scalar interface {
	parseScalar(s string) error
}

// Duration is a Go duration ("250ms", "30s"); negative values are refused.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) parseScalar(s string) error {
	v, err := ParseDuration(s)
	*d = Duration(v)
	return err
}

// ParseDuration parses a non-negative Go duration; a bare "0" is allowed.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, echof("want a duration such as 250ms or 30s, got %q", clip(s))
	}
	if v < 0 {
		return 0, errors.New("must not be negative")
	}
	return v, nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Size is a byte count: 1024, 64KiB, 10MiB, 1GiB (also KB/MB/GB as powers of 1000).
type Size int64

func (s *Size) parseScalar(v string) error {
	n, err := ParseSize(v)
	*s = Size(n)
	return err
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1}, {"", 1},
}

// ParseSize parses a size such as 64KiB.
func ParseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	for _, u := range sizeUnits {
		if !strings.HasSuffix(v, u.suffix) {
			continue
		}
		num := strings.TrimSpace(strings.TrimSuffix(v, u.suffix))
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 {
			break
		}
		if n > math.MaxInt64/u.mult {
			return 0, errors.New("size is too large")
		}
		return n * u.mult, nil
	}
	return 0, echof("want a size such as 512KiB or 10MiB, got %q", clip(v))
}

func (s Size) String() string {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s != 0 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	case s != 0 && s%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", s>>10)
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalJSON writes the size as it would be written in YAML.
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Rate is N requests per Period ("100/1m", "10/1s", "5/s").
type Rate struct {
	N      int
	Period time.Duration
}

func (r *Rate) parseScalar(v string) error {
	p, err := ParseRate(v)
	*r = p
	return err
}

// ParseRate parses N/DURATION; the duration's leading 1 may be left out.
func ParseRate(v string) (Rate, error) {
	bad := echof("want a rate such as 100/1m or 10/1s, got %q", clip(v))
	num, per, ok := strings.Cut(strings.TrimSpace(v), "/")
	if !ok {
		return Rate{}, bad
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n <= 0 {
		return Rate{}, bad
	}
	per = strings.TrimSpace(per)
	if r, _ := utf8.DecodeRuneInString(per); unicode.IsLetter(r) {
		per = "1" + per // "5/s"; but ".5s" is a duration already
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, bad
	}
	return Rate{N: n, Period: d}, nil
}

// PerSecond is the rate as events per second.
func (r Rate) PerSecond() float64 {
	if r.Period <= 0 {
		return 0
	}
	return float64(r.N) / r.Period.Seconds()
}

// IsZero reports whether no rate was given.
func (r Rate) IsZero() bool { return r.N == 0 }

func (r Rate) String() string {
	if r.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.N, shortDuration(r.Period))
}

// shortDuration writes d as a person would write a rate's period: 1h,
// 1m, 1h30m, 1s, 500ms (time.Duration writes 1h0m0s, 1m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalJSON writes N/DURATION.
func (r Rate) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// Percent is a fraction written as "50%" or 0.5.
type Percent float64

func (p *Percent) parseScalar(v string) error {
	v = strings.TrimSpace(v)
	div := 1.0
	if strings.HasSuffix(v, "%") {
		v, div = strings.TrimSuffix(v, "%"), 100
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return echof("want a percentage such as 50%%, got %q", clip(v))
	}
	*p = Percent(f / div)
	if !(*p > 0 && *p <= 1) { // written so that NaN fails too
		return errors.New("must be above 0% and at most 100%")
	}
	return nil
}

// MarshalJSON writes the percentage, e.g. "50%".
func (p Percent) MarshalJSON() ([]byte, error) {
	return json.Marshal(strconv.FormatFloat(float64(p)*100, 'f', -1, 64) + "%")
}

// Secret is a string that never prints: fmt, zerolog (through String and
// MarshalJSON) and JSON answers all see [REDACTED]. Reveal gives the value
// to the one place that must send it.
//
// The value sits behind a pointer: where fmt cannot call Format (inside an
// unexported field, or under a verb that does not suit an enclosing value,
// like %s of a *Config) it prints the fields raw, and a pointer prints as
// an address. Compare secrets with Reveal, not ==.
type Secret struct{ value *string }

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{value: &v} }

// Redacted is what a secret prints as.
const Redacted = "[REDACTED]"

func (s *Secret) parseScalar(v string) error { s.value = &v; return nil }

// Reveal returns the secret value, for sending upstream.
func (s Secret) Reveal() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.Reveal() == "" }

func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// Format keeps every fmt verb from printing the value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// MarshalJSON writes [REDACTED] (or "" for an empty secret).
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText writes [REDACTED] too, for encoders that prefer text.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// echoError is a parse error that quotes its input: the decoder passes
// the format and arguments on, so that Parse can redact the quote when the
// input came from a variable that fills a secret.
type echoError struct {
	format string
	args   []any
}

func echof(format string, args ...any) error { return &echoError{format, args} }

func (e *echoError) Error() string { return fmt.Sprintf(e.format, e.args...) }

// clip shortens echoed input so a long (maybe secret-bearing) value is not
// repeated whole in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
