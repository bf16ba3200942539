package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "30s", want: 30 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: " 5m ", want: 5 * time.Minute},
		{in: "0", want: 0},
		{in: "0s", want: 0},
		{in: "-1s", wantErr: "must not be negative"},
		{in: "10", wantErr: `want a duration such as 250ms or 30s, got "10"`},
		{in: "5 seconds", wantErr: `got "5 seconds"`},
		{in: "", wantErr: `got ""`},
		{in: "1d", wantErr: `got "1d"`},
		{in: "99999999999h", wantErr: "want a duration"},
		{in: strings.Repeat("x", 100), wantErr: `got "` + strings.Repeat("x", 37) + `..."`},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDuration(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1024", want: 1024},
		{in: "0", want: 0},
		{in: "64KiB", want: 64 << 10},
		{in: "10MiB", want: 10 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "10 MiB", want: 10 << 20},
		{in: "512B", want: 512},
		{in: "2KB", want: 2000},
		{in: "3MB", want: 3_000_000},
		{in: "1GB", want: 1_000_000_000},
		{in: "8589934591GiB", want: 8589934591 << 30},
		{in: "8589934592GiB", wantErr: "size is too large"},
		{in: "-1", wantErr: `want a size such as 512KiB or 10MiB, got "-1"`},
		{in: "-1KiB", wantErr: `got "-1KiB"`},
		{in: "1.5MiB", wantErr: `got "1.5MiB"`},
		{in: "10kib", wantErr: `got "10kib"`},
		{in: "KiB", wantErr: `got "KiB"`},
		{in: "", wantErr: `got ""`},
		{in: "ten", wantErr: `got "ten"`},
		{in: "99999999999999999999", wantErr: "want a size"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSize(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{1000, "1000"},
		{1 << 10, "1KiB"},
		{64 << 10, "64KiB"},
		{10 << 20, "10MiB"},
		{3 << 30, "3GiB"},
		{1536, "1536"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if back, err := ParseSize(tt.in.String()); err != nil || back != int64(tt.in) {
			t.Errorf("ParseSize(%q) = %d, %v; want it back as %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		perSec  float64
		wantErr bool
	}{
		{in: "100/1m", want: Rate{100, time.Minute}, perSec: 100.0 / 60},
		{in: "10/1s", want: Rate{10, time.Second}, perSec: 10},
		{in: "5/s", want: Rate{5, time.Second}, perSec: 5},
		{in: "5/m", want: Rate{5, time.Minute}, perSec: 5.0 / 60},
		{in: "1/h", want: Rate{1, time.Hour}, perSec: 1.0 / 3600},
		{in: "10/100ms", want: Rate{10, 100 * time.Millisecond}, perSec: 100},
		{in: "5/.5s", want: Rate{5, 500 * time.Millisecond}, perSec: 10},
		{in: " 3 / 2s ", want: Rate{3, 2 * time.Second}, perSec: 1.5},
		{in: "100", wantErr: true},
		{in: "100/", wantErr: true},
		{in: "/1s", wantErr: true},
		{in: "0/1s", wantErr: true},
		{in: "-5/1s", wantErr: true},
		{in: "5/0s", wantErr: true},
		{in: "5/-1s", wantErr: true},
		{in: "1.5/1s", wantErr: true},
		{in: "ten/1s", wantErr: true},
		{in: "5/1x", wantErr: true},
		{in: "5/sec", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), "want a rate such as 100/1m or 10/1s") {
				t.Errorf("ParseRate(%q) = %v, %v; want a 'want a rate' error", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if ps := got.PerSecond(); ps < tt.perSec*0.999999 || ps > tt.perSec*1.000001 {
			t.Errorf("ParseRate(%q).PerSecond() = %g, want %g", tt.in, ps, tt.perSec)
		}
		if back, err := ParseRate(got.String()); err != nil || back != got {
			t.Errorf("ParseRate(%q) = %+v, %v; want %q back as %+v", got.String(), back, err, tt.in, got)
		}
	}
	if !(Rate{}).IsZero() || (Rate{}).String() != "" || (Rate{}).PerSecond() != 0 {
		t.Error("the zero Rate must be IsZero, print as \"\" and have no rate")
	}
}

func TestPercent(t *testing.T) {
	tests := []struct {
		in      string
		want    Percent
		wantErr string
	}{
		{in: "50%", want: 0.5},
		{in: "0.5", want: 0.5},
		{in: "100%", want: 1},
		{in: "1", want: 1},
		{in: "12.5%", want: 0.125},
		{in: " 25 % ", want: 0.25},
		{in: "150%", wantErr: "must be above 0% and at most 100%"},
		{in: "1.5", wantErr: "must be above 0% and at most 100%"},
		{in: "0%", wantErr: "must be above 0%"},
		{in: "-10%", wantErr: "must be above 0%"},
		{in: "NaN", wantErr: "must be above 0%"},
		{in: "NaN%", wantErr: "must be above 0%"},
		{in: "Inf%", wantErr: "must be above 0%"},
		{in: "half", wantErr: `want a percentage such as 50%, got "half"`},
		{in: "%", wantErr: `want a percentage`},
	}
	for _, tt := range tests {
		var p Percent
		err := p.parseScalar(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Percent %q: error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p != tt.want {
			t.Errorf("Percent %q = %v, %v; want %v", tt.in, p, err, tt.want)
		}
	}
}

func TestScalarsMarshalAsWritten(t *testing.T) {
	v := struct {
		D Duration
		S Size
		R Rate
		P Percent
		Z Rate
	}{Duration(1500 * time.Millisecond), Size(64 << 10), Rate{10, time.Second}, 0.5, Rate{}}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"D":"1.5s","S":"64KiB","R":"10/1s","P":"50%","Z":""}`
	if string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
}
