package admin

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestRedactStrings: secrets go inside strings (escaped or not) and
// nowhere else, so that a secret of digits cannot break a number.
func TestRedactStrings(t *testing.T) {
	redact := func(s string) string {
		for _, secret := range []string{"12345", `a\"b`} {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
		return s
	}
	for _, c := range []struct{ in, want string }{
		{`{"n": 1234567, "s": "x12345y"}`, `{"n": 1234567, "s": "x[REDACTED]y"}`},
		{`{"12345": 12345}`, `{"[REDACTED]": 12345}`},
		{`["a\"b", "\\", "q\"12345"]`, `["[REDACTED]", "\\", "q\"[REDACTED]"]`},
		{`{"x": "unterminated 12345`, `{"x": "unterminated [REDACTED]`},
		{`"`, `"`},
	} {
		got := string(redactStrings([]byte(c.in), redact))
		if got != c.want {
			t.Errorf("redactStrings(%s) = %s, want %s", c.in, got, c.want)
		}
		if json.Valid([]byte(c.in)) && !json.Valid([]byte(got)) {
			t.Errorf("redactStrings(%s) broke the JSON: %s", c.in, got)
		}
	}
}
