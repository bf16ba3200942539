package proxy

import (
	"net/http"
	"testing"
	"time"
)

// A request is logged as the table it started on says, not as a table a
// reload swapped in while it was in flight (issue 20: finish read
// log.access_log from the running table). Both directions: a request
// that began under access_log: true is logged though the reload turned
// logging off, and one that began under false is not logged though the
// reload turned it on.
func TestAccessLogFollowsTheRequestsTable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		start, end bool // access_log when the request starts, and after the reload
	}{
		{"on then off", true, false},
		{"off then on", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arrived, release := make(chan struct{}, 1), make(chan struct{})
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				<-release
			})
			conf := func(on bool) string {
				v := "false"
				if on {
					v = "true"
				}
				return `
log: { access_log: ` + v + ` }
upstreams: { api: { url: "{{UP}}" } }
routes: [ { name: r, match: { path_prefix: / }, upstream: api } ]
`
			}
			vars := map[string]string{"UP": up.URL}
			p := startProxy(t, conf(tc.start), vars)
			done := make(chan int, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodGet, p.URL+"/x", nil)
				req.Header.Set("X-Request-Id", "in-flight")
				resp, err := p.Client().Do(req)
				if err != nil {
					done <- 0
					return
				}
				resp.Body.Close()
				done <- resp.StatusCode
			}()
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the upstream")
			}
			p.reload(t, conf(tc.end), vars)
			close(release)
			if code := <-done; code != http.StatusOK {
				t.Fatalf("status %d, want 200", code)
			}
			// finish runs after the response is written: poll a little.
			deadline := time.Now().Add(2 * time.Second)
			var got bool
			for time.Now().Before(deadline) {
				if got = accessLine(t, p.logs, "in-flight") != nil; got {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got != tc.start {
				t.Errorf("logged = %v, want %v (access_log was %v when the request started, %v when it ended)", got, tc.start, tc.start, tc.end)
			}
		})
	}
}
