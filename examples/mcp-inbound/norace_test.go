//go:build !race

package mcpinbound_test

const raceEnabled = false
