package testkit

import (
	"encoding/json"
	"net/http"
	"testing"
)

// BreakerState asks an admin API (base URL admin) for the state of the
// breaker named name, as GET /breakers lists it; ok is false when no such
// breaker is listed.
func BreakerState(t testing.TB, admin, name string) (state string, ok bool) {
	t.Helper()
	resp, err := http.Get(admin + "/breakers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Breakers []struct{ Name, State string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, b := range body.Breakers {
		if b.Name == name {
			return b.State, true
		}
	}
	return "", false
}
