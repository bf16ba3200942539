package ending

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestOf(t *testing.T) {
	here := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	own := errors.New("request finished")
	for _, tc := range []struct {
		name   string
		cause  error
		client context.Context
		want   Reason
	}{
		{"nothing ended", nil, here, Running},
		{"route timer", ErrTimeout, here, Timeout},
		{"route timer, wrapped", fmt.Errorf("attempt: %w", ErrTimeout), here, Timeout},
		{"context deadline (token wait)", context.DeadlineExceeded, here, Timeout},
		{"bare cancel from failsafe", context.Canceled, here, Timeout},
		{"the owner's own end", own, here, Ended},
		{"client left, then the timer", ErrTimeout, gone, ClientLeft},
		{"client left", context.Canceled, gone, ClientLeft},
		{"client left, nothing else seen", nil, gone, ClientLeft},
	} {
		if got := Of(tc.cause, tc.client); got != tc.want {
			t.Errorf("%s: Of = %d, want %d", tc.name, got, tc.want)
		}
	}
}
