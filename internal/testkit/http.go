package testkit

import (
	"io"
	"net/http"
	"testing"
)

// Get sends a GET for url with c and returns the answer and its whole
// body, closed; an error sending or reading fails the test.
func Get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, string(b)
}
