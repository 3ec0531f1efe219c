package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/acme"
)

// CertLister lists certificates for GET /v1/certs. *acme.Manager implements
// it.
type CertLister interface {
	Certs(ctx context.Context) ([]acme.Cert, error)
}

// Certs is the body of GET /v1/certs.
type Certs struct {
	Certs []acme.Cert `json:"certs"`
}

func (s *Server) certs(w http.ResponseWriter, r *http.Request) error {
	if s.certLister == nil {
		return fmt.Errorf("%w: TLS is not configured ([server] https)", errNotConfig)
	}
	cs, err := s.certLister.Certs(r.Context())
	if err != nil {
		return err
	}
	if cs == nil {
		cs = []acme.Cert{}
	}
	writeJSON(w, http.StatusOK, Certs{Certs: cs})
	return nil
}

// Certs lists the certificates tollgate holds.
func (c *Client) Certs(ctx context.Context) ([]acme.Cert, error) {
	var out Certs
	_, err := c.do(ctx, http.MethodGet, "/v1/certs", nil, &out)
	return out.Certs, err
}

func certsCmd(ctx context.Context, c *Client, _ []string) (output, error) {
	cs, err := c.Certs(ctx)
	o := output{value: cs, header: []string{"NAMES", "ISSUER", "EXPIRES", "LAST ERROR"}}
	for _, cert := range cs {
		expires := "-"
		if !cert.NotAfter.IsZero() {
			expires = cert.NotAfter.UTC().Format(time.RFC3339)
		}
		lastErr := "-"
		if cert.LastError != "" {
			lastErr = cert.LastErrorAt.UTC().Format(time.RFC3339) + " " + cert.LastError
		}
		o.rows = append(o.rows, []string{strings.Join(cert.Names, ","), orDash(cert.Issuer), expires, lastErr})
	}
	return o, err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
