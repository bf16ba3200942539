// Package auth holds an upstream's credentials so that the app never does:
// an OAuth2 access token (client_credentials, refresh_token or password
// grant) fetched on first use, renewed in the background before it
// expires, and sent as `Authorization: Bearer …` by Transport.
//
// golang.org/x/oauth2 and its clientcredentials package speak the token
// protocol; this package decides when to ask (Source) and what to do with
// the answer. It knows nothing of routing, metrics or logs: observations
// leave through Observer, failures as *Error (errors.Is ErrUnavailable),
// whose message never holds a token, a secret or the token endpoint's body.
package auth
