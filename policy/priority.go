package policy

// Priority orders the waiters of a queue (a bulkhead's, an upstream's
// concurrency, an upstream quota's): High before Normal before Low, and
// within one priority by arrival. The zero value is Normal.
type Priority int8

// The priorities, lowest first.
const (
	Low    Priority = -1
	Normal Priority = 0
	High   Priority = 1
)

// ParsePriority reads a config value ("low", "normal", "high"); "" and
// anything else (a validated config has nothing else) is Normal.
func ParsePriority(s string) Priority {
	switch s {
	case "high":
		return High
	case "low":
		return Low
	}
	return Normal
}

func (p Priority) String() string {
	switch {
	case p > Normal:
		return "high"
	case p < Normal:
		return "low"
	}
	return "normal"
}
