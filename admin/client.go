package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// DefaultAddr is the admin API address the CLI uses when none is given.
const DefaultAddr = "http://127.0.0.1:9180"

// clientTimeout bounds one API call of the Client.
const clientTimeout = 30 * time.Second

// maxResponseBytes caps what the Client reads of a response.
const maxResponseBytes = 16 << 20

// Client calls the admin API. Errors the server answers are *Problem. It is
// safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client of the admin API at addr ("http://host:port", or
// "host:port" meaning http) that sends token as its bearer token.
func NewClient(addr, token string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{
		base:  strings.TrimRight(addr, "/"),
		token: token,
		hc:    &http.Client{Timeout: clientTimeout},
	}
}

// ListPlans returns every plan, sorted by name.
func (c *Client) ListPlans(ctx context.Context) ([]sites.Plan, error) {
	var out PlanList
	_, err := c.do(ctx, http.MethodGet, "/v1/plans", nil, &out)
	return out.Plans, err
}

// Plan returns one plan.
func (c *Client) Plan(ctx context.Context, name string) (sites.Plan, error) {
	var out sites.Plan
	_, err := c.do(ctx, http.MethodGet, "/v1/plans/"+url.PathEscape(name), nil, &out)
	return out, err
}

// PutPlan creates or replaces the plan named p.Name; created reports which.
func (c *Client) PutPlan(ctx context.Context, p sites.Plan) (out sites.Plan, created bool, err error) {
	code, err := c.do(ctx, http.MethodPut, "/v1/plans/"+url.PathEscape(p.Name), p, &out)
	return out, code == http.StatusCreated, err
}

// ListOrgs returns every org, sorted by id.
func (c *Client) ListOrgs(ctx context.Context) ([]sites.Org, error) {
	var out OrgList
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs", nil, &out)
	return out.Orgs, err
}

// Org returns one org and its sites.
func (c *Client) Org(ctx context.Context, id string) (OrgDetail, error) {
	var out OrgDetail
	_, err := c.do(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(id), nil, &out)
	return out, err
}

// CreateOrg adds an org.
func (c *Client) CreateOrg(ctx context.Context, in OrgCreate) (sites.Org, error) {
	var out sites.Org
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs", in, &out)
	return out, err
}

// UpdateOrg changes the fields of the org that patch sets.
func (c *Client) UpdateOrg(ctx context.Context, id string, patch sites.OrgPatch) (sites.Org, error) {
	return c.PatchOrg(ctx, id, OrgUpdate{OrgPatch: patch})
}

// DeleteOrg removes an org that owns no sites.
func (c *Client) DeleteOrg(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/orgs/"+url.PathEscape(id), nil, nil)
	return err
}

// CreateSite adds a site to the org.
func (c *Client) CreateSite(ctx context.Context, org string, in SiteCreate) (sites.Site, error) {
	var out sites.Site
	_, err := c.do(ctx, http.MethodPost, "/v1/orgs/"+url.PathEscape(org)+"/sites", in, &out)
	return out, err
}

// Site returns one site and its domains.
func (c *Client) Site(ctx context.Context, id string) (SiteDetail, error) {
	var out SiteDetail
	_, err := c.do(ctx, http.MethodGet, "/v1/sites/"+url.PathEscape(id), nil, &out)
	return out, err
}

// DeleteSite removes a site and its domains.
func (c *Client) DeleteSite(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/sites/"+url.PathEscape(id), nil, nil)
	return err
}

// SetSiteActive marks the site active (true), inactive (false) or, with
// nil, unmarked (PATCH /v1/sites/{id}).
func (c *Client) SetSiteActive(ctx context.Context, id string, active *bool) (sites.Site, error) {
	var out sites.Site
	body := map[string]*bool{"active": active}
	_, err := c.do(ctx, http.MethodPatch, "/v1/sites/"+url.PathEscape(id), body, &out)
	return out, err
}

// AttachDomain attaches a domain to the site; the server normalizes it.
func (c *Client) AttachDomain(ctx context.Context, site string, in DomainAttach) (sites.Domain, error) {
	var out sites.Domain
	_, err := c.do(ctx, http.MethodPost, "/v1/sites/"+url.PathEscape(site)+"/domains", in, &out)
	return out, err
}

// Domain returns one attached domain.
func (c *Client) Domain(ctx context.Context, name string) (sites.Domain, error) {
	var out sites.Domain
	_, err := c.do(ctx, http.MethodGet, "/v1/domains/"+url.PathEscape(name), nil, &out)
	return out, err
}

// DetachDomain removes a domain.
func (c *Client) DetachDomain(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(name), nil, nil)
	return err
}

// do sends in (if not nil) as JSON and decodes a 2xx body into out (if not
// nil). A 4xx or 5xx answer is returned as a *Problem.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (int, error) {
	return c.doWith(ctx, method, path, nil, in, out)
}

// doWith is do with the request headers h (nil: none) added.
func (c *Client) doWith(ctx context.Context, method, path string, h http.Header, in, out any) (int, error) {
	if in == nil {
		return c.doRaw(ctx, method, path, h, nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return 0, fmt.Errorf("admin client: %w", err)
	}
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", contentTypeJSON)
	return c.doRaw(ctx, method, path, h, bytes.NewReader(b), out)
}

// doRaw sends body (if not nil) with the headers h (its Content-Type, say)
// and decodes a 2xx JSON body into out (if not nil). A 4xx or 5xx answer
// is returned as a *Problem.
func (c *Client) doRaw(ctx context.Context, method, path string, h http.Header, body io.Reader, out any) (int, error) {
	resp, err := c.send(ctx, method, path, h, body)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("admin client: reading the response: %w", err)
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, responseProblem(resp.StatusCode, b)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("admin client: decoding the response of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// stream copies the 2xx body of GET path to w, whatever its size and
// however long it takes (no clientTimeout: ctx bounds it).
func (c *Client) stream(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.sendWith(ctx, &http.Client{Transport: c.hc.Transport}, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return responseProblem(resp.StatusCode, b)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("admin client: reading the response: %w", err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, h http.Header, body io.Reader) (*http.Response, error) {
	return c.sendWith(ctx, c.hc, method, path, h, body)
}

// sendWith sends the request with the headers h; one answered 429 (the
// admin API's rate limit refuses before doing anything) is sent again, with
// the same headers, after its Retry-After, up to maxRateRetries times, when
// its body can be read again.
func (c *Client) sendWith(ctx context.Context, hc *http.Client, method, path string, h http.Header, body io.Reader) (*http.Response, error) {
	for retries := 0; ; retries++ {
		resp, err := c.sendOnce(ctx, hc, method, path, h, body)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests || retries == maxRateRetries {
			return resp, err
		}
		wait, ok := retryAfter(resp.Header.Get("Retry-After"))
		seeker, seekable := body.(io.Seeker)
		if !ok || body != nil && !seekable {
			return resp, nil
		}
		resp.Body.Close()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("admin client: %w", ctx.Err())
		case <-t.C:
		}
		if seekable {
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				return nil, fmt.Errorf("admin client: %w", err)
			}
		}
	}
}

// maxRateRetries bounds the retries of a request answered 429; a wait
// longer than maxRateWait is not waited for.
const (
	maxRateRetries = 5
	maxRateWait    = 10 * time.Second
)

// retryAfter reads a Retry-After of whole seconds within maxRateWait.
func retryAfter(v string) (time.Duration, bool) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || time.Duration(n)*time.Second > maxRateWait {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func (c *Client) sendOnce(ctx context.Context, hc *http.Client, method, path string, h http.Header, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", contentTypeJSON+", "+contentTypeProblem+", "+contentTypeNDJSON)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	return resp, nil
}

// responseProblem decodes an error body; one that is not a problem (a proxy's
// HTML page, say) becomes a problem with the status text as its title.
func responseProblem(code int, body []byte) *Problem {
	var p Problem
	if err := json.Unmarshal(body, &p); err == nil && p.Title != "" {
		if p.Status == 0 {
			p.Status = code
		}
		return &p
	}
	detail := strings.TrimSpace(string(body))
	if len(detail) > 200 {
		detail = detail[:200] + "..."
	}
	return &Problem{Type: "about:blank", Title: http.StatusText(code), Status: code, Detail: detail}
}
