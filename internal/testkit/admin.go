package testkit

import (
	"encoding/json"
	"net/http"
	"testing"
)

// Breaker is one breaker as an admin API's GET /breakers lists it.
type Breaker struct {
	Name, State string
	Failures    int
}

// Breakers asks an admin API (base URL admin) for its breakers, as GET
// /breakers lists them.
func Breakers(t testing.TB, admin string) []Breaker {
	t.Helper()
	resp, err := http.Get(admin + "/breakers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Breakers []Breaker }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Breakers
}

// BreakerState asks an admin API (base URL admin) for the state of the
// breaker named name, as GET /breakers lists it; ok is false when no such
// breaker is listed.
func BreakerState(t testing.TB, admin, name string) (state string, ok bool) {
	t.Helper()
	for _, b := range Breakers(t, admin) {
		if b.Name == name {
			return b.State, true
		}
	}
	return "", false
}
