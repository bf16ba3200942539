package mcp

import (
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Labels bounds the metrics' tool label: the tools the config names, then
// the first max tools learned from tools/list answers (Tools.Watch), then
// "other". What a client calls never adds a label: 55 requests naming
// junk tools would otherwise take every slot, and the real tools would be
// "other" for the life of the process (issue 19). A label once given
// stays given, across reloads, so series never flap. Lookups take no
// lock. The zero value labels every tool "other" until configured.
type Labels struct {
	named   atomic.Pointer[map[string]bool]
	max     atomic.Int64
	mu      sync.Mutex                      // serialises learn
	learned atomic.Pointer[map[string]bool] // copy on write
}

// Configure takes a config's named tools and mcp.max_tools.
func (l *Labels) Configure(named []string, max int) {
	m := make(map[string]bool, len(named))
	for _, n := range named {
		m[n] = true
	}
	l.named.Store(&m)
	l.max.Store(int64(max))
}

// Label is tool's label value: "" for a request that calls no tool.
func (l *Labels) Label(tool string) string {
	switch {
	case tool == "":
		return ""
	case has(l.named.Load(), tool), has(l.learned.Load(), tool):
		return tool
	}
	return "other"
}

func has(m *map[string]bool, k string) bool { return m != nil && (*m)[k] }

// learn adds the names of a tools/list answer, up to max learned names in
// all.
func (l *Labels) learn(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.learned.Load()
	var next map[string]bool
	for _, n := range names {
		if has(old, n) || has(l.named.Load(), n) || len(n) > MaxName || !utf8.ValidString(n) {
			continue
		}
		if next == nil {
			next = make(map[string]bool)
			if old != nil {
				for k := range *old {
					next[k] = true
				}
			}
		}
		if int64(len(next)) >= l.max.Load() {
			break
		}
		next[n] = true
	}
	if next != nil {
		l.learned.Store(&next)
	}
}
