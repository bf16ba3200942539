package config

import "testing"

// IsLoopback is the one loopback test for listen addresses, listeners'
// addresses and Host headers; before, three functions disagreed (the
// validator's refused "LOCALHOST:9901" and "[::ffff:127.0.0.1]:1", the
// guard's Host check accepted them).
func TestIsLoopback(t *testing.T) {
	cases := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9901", true},
		{"127.8.9.10:80", true},
		{"[::1]:9901", true},
		{"[::ffff:127.0.0.1]:1", true},
		{"localhost:9901", true},
		{"LOCALHOST:9901", true},
		{"localhost.:9901", true},
		{"localhost", true},
		{"127.0.0.1", true},
		{"[::1]", true},
		{"::1", true},
		{":9901", false},
		{"0.0.0.0:9901", false},
		{"[::]:9901", false},
		{"10.0.0.1:9901", false},
		{"localhost.evil.example:80", false},
		{"127.0.0.1.nip.io", false},
		{"evil.example", false},
		{"", false},
	}
	for _, c := range cases {
		if got := IsLoopback(c.addr); got != c.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", c.addr, got, c.want)
		}
	}
}
