// Package chaos holds breakwater's fault-injection and abuse suites; it
// has tests only. Each test drives the real breakwater binary (built once
// in TestMain) with a YAML file, in front of upstreams that fail, stall,
// reset or throttle on cue — some of them behind a toxiproxy
// (github.com/Shopify/toxiproxy/v2, used as a library) — and asserts the
// numbers SPEC.md promises, printing its figures with t.Logf.
//
//	go test ./chaos/                    # short form (part of make test)
//	CHAOS_FULL=1 go test -v ./chaos/    # long form (make chaos)
//
// docs/resilience.md describes every scenario and its figures.
package chaos
