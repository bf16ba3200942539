package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/oauth2"

	"github.com/breakwater-proxy/breakwater/config"
)

// Login bootstraps the refresh_token grant: it runs the authorization-code
// flow with PKCE once and writes the refresh token it gets to
// c.RefreshTokenFile (0600, atomically). It prints to out the URL to open
// in a browser, receives the redirect on a one-shot listener at
// 127.0.0.1:c.RedirectPort/callback, checks `state`, and exchanges the
// code with x/oauth2. A callback with another state is answered 400 and
// login keeps waiting: any local process or web page can send one, and
// must not be able to end the login. It never prints a token. It gives
// up when ctx ends.
func Login(ctx context.Context, upstream string, c *config.OAuth2, out io.Writer) error {
	switch {
	case c.AuthURL == "":
		return fmt.Errorf("upstream %s: auth.oauth2.auth_url is needed to log in", upstream)
	case c.RedirectPort <= 0:
		return fmt.Errorf("upstream %s: auth.oauth2.redirect_port is needed to log in (the port registered in the redirect URI)", upstream)
	case c.RefreshTokenFile == "":
		return fmt.Errorf("upstream %s: auth.oauth2.refresh_token_file is needed: login writes the refresh token there", upstream)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.RedirectPort)))
	if err != nil {
		return fmt.Errorf("cannot listen for the redirect: %w", err)
	}
	defer ln.Close()
	style := oauth2.AuthStyleInHeader
	if c.AuthStyle == "params" {
		style = oauth2.AuthStyleInParams
	}
	conf := &oauth2.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret.Reveal(), Scopes: c.Scopes,
		RedirectURL: "http://127.0.0.1:" + strconv.Itoa(c.RedirectPort) + "/callback",
		Endpoint:    oauth2.Endpoint{AuthURL: c.AuthURL, TokenURL: c.TokenURL, AuthStyle: style}}
	state := randomHex(32)
	verifier := oauth2.GenerateVerifier()
	var extra []oauth2.AuthCodeOption
	for k, v := range c.Params {
		extra = append(extra, oauth2.SetAuthURLParam(k, v))
	}
	authURL := conf.AuthCodeURL(state, append([]oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}, extra...)...)
	fmt.Fprintf(out, "Open this URL in a browser to authorize breakwater for upstream %s:\n\n  %s\n\nWaiting for the redirect to %s …\n", upstream, authURL, conf.RedirectURL)

	result := make(chan error, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("state")), []byte(state)) != 1 {
			http.Error(w, "breakwater: this redirect's state is not the one this login sent; still waiting for the right one", http.StatusBadRequest)
			return
		}
		err := callback(ctx, r, conf, verifier, c)
		if err != nil {
			http.Error(w, "breakwater: login failed: "+err.Error(), http.StatusBadRequest)
		} else {
			_, _ = io.WriteString(w, "breakwater: logged in. You can close this tab.\n")
		}
		select {
		case result <- err:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	select {
	case err := <-result:
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "Refresh token written to %s (mode 0600).\n", c.RefreshTokenFile)
		return nil
	case <-ctx.Done():
		return errors.New("no redirect arrived in time")
	}
}

// callback handles the redirect that carries our state: the code is
// exchanged. Its errors quote the server's error code, never a token or a
// body.
func callback(ctx context.Context, r *http.Request, conf *oauth2.Config, verifier string, c *config.OAuth2) error {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return fmt.Errorf("the authorization server refused: %s", registeredCode(e))
	}
	code := q.Get("code")
	if code == "" {
		return errors.New("the redirect carries no code")
	}
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(verifier)}
	for k, v := range c.Params {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	xctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	xctx = context.WithValue(xctx, oauth2.HTTPClient, tokenClient(http.DefaultTransport, 30*time.Second))
	tok, err := conf.Exchange(xctx, code, opts...)
	if err != nil {
		return errors.New(newError("login", err).Endpoint())
	}
	if tok.RefreshToken == "" {
		return errors.New("the token endpoint issued no refresh token (does the client allow offline access?)")
	}
	if err := WriteFileAtomic(c.RefreshTokenFile, []byte(tok.RefreshToken+"\n")); err != nil {
		return errors.New("cannot write refresh_token_file: " + errText(err))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
