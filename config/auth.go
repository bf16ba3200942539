package config

import (
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Auth is how breakwater obtains the credentials it sends to an upstream.
// It belongs to its upstream alone: routes never inherit it, and nothing
// in `defaults:` sets it. A nil *Auth means the upstream gets whatever
// headers.set says and nothing more.
type Auth struct {
	// OAuth2 fetches and renews an OAuth2 access token; nil = none.
	OAuth2 *OAuth2 `yaml:"oauth2" json:"oauth2,omitempty"`

	fields
}

// OAuth2 grants, as written in auth.oauth2.grant.
const (
	GrantClientCredentials = "client_credentials"
	GrantRefreshToken      = "refresh_token"
	GrantPassword          = "password"
)

// OAuth2 is an upstream's OAuth2 client. The token it obtains is sent as
// `Authorization: Bearer …`, replacing what the client sent.
type OAuth2 struct {
	// TokenURL is the token endpoint (required).
	TokenURL string `yaml:"token_url" json:"token_url"`
	// Grant is client_credentials (default), refresh_token or password.
	Grant        string `yaml:"grant" json:"grant"`
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret Secret `yaml:"client_secret" json:"client_secret"`
	// Scopes are asked for with every token request; none = the server's default.
	Scopes []string `yaml:"scopes" json:"scopes,omitempty"`
	// Params are extra form fields of the token request (audience, resource…).
	Params map[string]string `yaml:"params" json:"params,omitempty"`
	// AuthStyle is how the client authenticates: header (HTTP Basic,
	// default) or params (client_id and client_secret in the form).
	AuthStyle string `yaml:"auth_style" json:"auth_style"`
	// RefreshBefore is how long before expiry the token is renewed in the
	// background (default 1m); a token that lives less than twice as long
	// is renewed half-way through its life instead.
	RefreshBefore Duration `yaml:"refresh_before" json:"refresh_before"`
	// MinRenewInterval is how often, at most, an upstream 401 forces a
	// token renewal (default 10s, at least 1s): a 401 within it of the last
	// forced renewal passes through without a token request. Zero (a block
	// that skipped defaults) means the default.
	MinRenewInterval Duration `yaml:"min_renew_interval" json:"min_renew_interval"`

	// RefreshTokenFile holds the refresh token of the refresh_token grant;
	// a rotated one is written back to it (0600). `breakwater oauth2 login`
	// writes the first one.
	RefreshTokenFile string `yaml:"refresh_token_file" json:"refresh_token_file,omitempty"`
	// Username and Password are the password grant's resource owner.
	Username string `yaml:"username" json:"username,omitempty"`
	Password Secret `yaml:"password" json:"password"`

	// AuthURL is the authorization endpoint, used only by `breakwater
	// oauth2 login`; RedirectPort is where login listens for the callback
	// on 127.0.0.1 (0 = not set: login refuses to run).
	AuthURL      string `yaml:"auth_url" json:"auth_url,omitempty"`
	RedirectPort int    `yaml:"redirect_port" json:"redirect_port,omitempty"`

	fields
}

// oauth2Defaults fill an auth.oauth2 block.
const oauth2Defaults = `
grant: client_credentials # the grant of service-to-service APIs: no user in the loop
auth_style: header        # RFC 6749 §2.3.1: servers MUST support HTTP Basic
refresh_before: 1m        # renew well before expiry: a request never waits for a token
min_renew_interval: 10s   # a persistent 401 (a revoked client, a wrong scope) costs one token request per 10 s, not one per request
`

// applyAuthDefaults fills u's auth.oauth2 keys the file left unset.
func applyAuthDefaults(u *Upstream) {
	if u.Auth == nil || u.Auth.OAuth2 == nil {
		return
	}
	var d OAuth2
	mustDecode(oauth2Defaults, &d)
	inherit(reflect.ValueOf(u.Auth.OAuth2).Elem(), reflect.ValueOf(&d).Elem())
}

// auth validates an upstream's auth block.
func (v *validator) auth(path string, a *Auth) {
	if a == nil {
		return
	}
	path += ".auth"
	o := a.OAuth2
	if o == nil {
		v.errorf(path, "an auth block needs oauth2")
		return
	}
	p := path + ".oauth2"
	absURL := func(key, s string) {
		u, err := url.Parse(s)
		switch {
		case s == "":
			v.errorf(p+"."+key, "%s is needed", key)
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			v.errorf(p+"."+key, "want an absolute http:// or https:// URL")
		}
	}
	absURL("token_url", o.TokenURL)
	if o.AuthURL != "" {
		absURL("auth_url", o.AuthURL)
	}
	if o.ClientID == "" {
		v.errorf(p+".client_id", "client_id is needed")
	}
	switch o.AuthStyle {
	case "header", "params":
	default:
		v.errorf(p+".auth_style", "want header or params, got %q", o.AuthStyle)
	}
	switch o.Grant {
	case GrantClientCredentials:
		if o.ClientSecret.IsZero() {
			v.errorf(p+".client_secret", "the client_credentials grant needs a client_secret")
		}
	case GrantRefreshToken:
		if o.RefreshTokenFile == "" {
			v.errorf(p+".refresh_token_file", "the refresh_token grant needs a refresh_token_file (written by `breakwater oauth2 login`)")
		}
	case GrantPassword:
		if o.Username == "" {
			v.errorf(p+".username", "the password grant needs a username")
		}
		if o.Password.IsZero() {
			v.errorf(p+".password", "the password grant needs a password")
		}
	default:
		v.errorf(p+".grant", "want client_credentials, refresh_token or password, got %q", o.Grant)
	}
	v.checkRegular(p+".refresh_token_file", o.RefreshTokenFile)
	if o.MinRenewInterval.D() < time.Second {
		v.errorf(p+".min_renew_interval", "must be at least 1s (token requests are never closer than that), got %s", o.MinRenewInterval)
	}
	if o.RedirectPort < 0 || o.RedirectPort > 65535 {
		v.errorf(p+".redirect_port", "want a port between 1 and 65535")
	}
	for i, s := range o.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			v.errorf(p+".scopes", "scope %d is empty or holds a space: list each scope on its own", i)
		}
	}
	for k := range o.Params {
		switch k {
		case "grant_type", "client_id", "client_secret", "scope", "refresh_token", "username", "password", "code", "code_verifier", "redirect_uri":
			v.errorf(p+".params."+k, "%s is set by breakwater itself, not by params", k)
		}
	}
}

// SecretFiles are the files named by ${file:…} in the config, in the order
// they first appear: a change to one is a change to the config (the
// watcher reloads). Nil for none.
func (c *Config) SecretFiles() []string { return slices.Clone(c.files) }
