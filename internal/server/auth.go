package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// errUnauthorized is an upload without the server's upload token, or with a wrong one.
var errUnauthorized = errors.New(`this server takes uploads only with its upload token: send "Authorization: Bearer <token>" (or the form field "token" before the file)`)

// tokenField is the multipart form field that carries the upload token for the HTML form.
const tokenField = "token"

// maxTokenField bounds how much of a token form field is read.
const maxTokenField = 4096

// uploadAuth says whether an upload may go on: yes when the server has no token; when the
// request brings the token in its Authorization header; and for a multipart body, perhaps
// later, when its token field comes (see receive). A wrong header is refused at once.
func (s *Server) uploadAuth(c echo.Context) (authorized bool, err error) {
	if s.cfg.UploadToken == "" {
		return true, nil
	}
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	if h == "" {
		return false, nil
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || !s.tokenMatches(strings.TrimSpace(token)) {
		return false, errUnauthorized
	}
	return true, nil
}

// tokenMatches compares a token with the server's in constant time: their hashes, so
// neither the content nor the length of the real token leaks through timing.
func (s *Server) tokenMatches(token string) bool {
	got := sha256.Sum256([]byte(token))
	want := sha256.Sum256([]byte(s.cfg.UploadToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// readTokenField reads the token form field, bounded.
func readTokenField(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenField+1))
	if err != nil {
		return "", &bodyError{err}
	}
	if len(b) > maxTokenField {
		return "", errUnauthorized
	}
	return strings.TrimSpace(string(b)), nil
}

// challenge adds the header a 401 must carry.
func challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="ckptview uploads"`)
}
