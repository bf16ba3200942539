//go:build race

package testkit

// RaceEnabled reports whether the tests are built with -race.
const RaceEnabled = true
