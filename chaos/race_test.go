//go:build race

package chaos

// raceEnabled: the test binary (the client side) is race-built, which
// slows it several-fold; the breakwater binary under test never is.
const raceEnabled = true
