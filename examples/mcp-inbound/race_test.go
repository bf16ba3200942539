//go:build race

package mcpinbound_test

// raceEnabled builds the breakwater binary with -race too, so that the
// proxy's own goroutines are checked while MCP traffic flows through it.
const raceEnabled = true
