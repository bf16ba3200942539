package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
)

// ErrUnavailable is what every failure to obtain a token matches
// (errors.Is): the proxy answers it with upstream_auth_failed.
var ErrUnavailable = errors.New("no upstream token could be obtained")

// Error is a failed token request, as far as it is safe to tell: the
// token endpoint's status and OAuth2 `error` code, never its body (a
// server may echo the request, client secret included).
type Error struct {
	Upstream string
	// Status is the token endpoint's HTTP status; 0 when it did not answer.
	Status int
	// Code is the OAuth2 error code (RFC 6749 §5.2: invalid_client…) when
	// it is a registered one, "other" for any other, "" when the answer
	// had none (see registeredCode).
	Code string
	// Cause says why there was no answer (unreachable, timed out) or what
	// else went wrong on our side; "" when Status says it all.
	Cause string
}

func (e *Error) Unwrap() error { return ErrUnavailable }

func (e *Error) Error() string {
	return "upstream " + e.Upstream + ": " + e.Endpoint()
}

// Endpoint says what the token endpoint did, in a phrase.
func (e *Error) Endpoint() string {
	var b strings.Builder
	if e.Status != 0 {
		b.WriteString("the token endpoint answered " + strconv.Itoa(e.Status))
		if e.Code != "" {
			b.WriteString(" (" + e.Code + ")")
		}
	} else {
		b.WriteString("the token endpoint gave no token")
	}
	if e.Cause != "" {
		b.WriteString(": " + e.Cause)
	}
	return b.String()
}

// Transient reports whether trying again later may work by itself (the
// endpoint was down or overloaded), as opposed to a refused credential
// or an answer breakwater cannot use.
func (e *Error) Transient() bool {
	return e.Status == 0 || e.Status == 429 || e.Status >= 500
}

// Detail is the message a client (often a language model) is given.
func (e *Error) Detail() string {
	msg := fmt.Sprintf("breakwater could not obtain an access token for upstream %q: %s.", e.Upstream, e.Endpoint())
	switch {
	case e.Transient():
		return msg + " The token endpoint may be down; trying again later may work."
	case e.Status/100 == 2 || e.Status/100 == 3:
		return msg + " Its answer cannot be used; retrying will not help until an operator fixes the token endpoint or its settings."
	}
	return msg + " The credentials breakwater holds for this upstream were refused; retrying will not help until an operator fixes them."
}

// newError describes err, a failed token request, without its body.
func newError(upstream string, err error) *Error {
	e := &Error{Upstream: upstream}
	var re *oauth2.RetrieveError
	var ne net.Error
	switch {
	case errors.As(err, &re):
		if re.Response != nil {
			e.Status = re.Response.StatusCode
		}
		e.Code = registeredCode(re.ErrorCode)
		switch e.Status / 100 {
		case 2:
			e.Cause = "the answer held no usable token"
		case 3:
			e.Cause = "a redirect, which is never followed: credentials go to token_url only"
		}
	case errors.Is(err, errNoLifetime):
		e.Status, e.Cause = http.StatusOK, errNoLifetime.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		e.Cause = "it did not answer in time"
	case isConnError(err):
		e.Cause = "it could not be reached"
	case errors.Is(err, errNoRefreshToken):
		e.Cause = errNoRefreshToken.Error()
	case errors.Is(err, errReadRefreshToken):
		e.Cause = errReadRefreshToken.Error()
	default:
		// x/oauth2's other errors quote the body ("oauth2: cannot parse
		// json: …", "server response missing access_token" is safe but
		// the rest is not): say only that the answer was unusable.
		e.Cause = "its answer could not be used"
	}
	return e
}

func isConnError(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	return errors.As(err, &op) || errors.As(err, &dns)
}

// registeredCode is an OAuth2 error code as it may be quoted: one of the
// registered codes, "other" for anything else, "" for none. A server is
// free to put anything there (even the secret it was sent, reflected),
// and the code reaches clients, logs and /health (SPEC Part 3, "Token
// endpoints").
func registeredCode(s string) string {
	switch {
	case s == "":
		return ""
	case registeredCodes[s]:
		return s
	}
	return "other"
}

// registeredCodes are the error codes of the IANA "OAuth Extensions Error
// Registry" that a token or authorization endpoint answers with.
var registeredCodes = map[string]bool{
	// RFC 6749 §5.2, token endpoint
	"invalid_request": true, "invalid_client": true, "invalid_grant": true,
	"unauthorized_client": true, "unsupported_grant_type": true, "invalid_scope": true,
	// RFC 6749 §4.1.2.1, authorization endpoint (oauth2 login's redirect)
	"access_denied": true, "unsupported_response_type": true,
	"server_error": true, "temporarily_unavailable": true,
	// RFC 8693 §2.2.2, token exchange; RFC 8707 §2, resource indicators
	"invalid_target": true,
	// RFC 6750 §3.1, bearer tokens
	"invalid_token": true, "insufficient_scope": true,
	// RFC 8628 §3.5, device authorization
	"authorization_pending": true, "slow_down": true, "expired_token": true,
}
