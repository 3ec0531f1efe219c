package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tollgate-edge/tollgate/reason"
)

// ErrorPages are the pages the public listeners answer errors and refusals
// with, each rendered from a template: the operator's ([proxy]
// error_pages) or the built-in one. A page that does not depend on the org
// is rendered once, by LoadErrorPages; one that does is rendered for each
// org on its first refusal and kept (orgPages). Safe for concurrent use;
// nothing in it changes after LoadErrorPages but the kept pages.
type ErrorPages struct {
	status  map[int]*errorPage    // every 4xx and 5xx status net/http names
	refusal map[string]*errorPage // every code the proxy sends, by code
	renewal string                // [billing] renewal_url; "": none
	orgs    orgPages
}

// PageData are the variables of an error page template.
type PageData struct {
	Status     int    // the HTTP status: 402
	StatusText string // its name: "Payment Required"
	// Reason is the refusal's code, as in the Tollgate-Reason header
	// (docs/errors.md); "" for a plain error (a missing file, an upstream
	// that is down).
	Reason string
	// Text is tollgate's sentence for the status or refusal, the one the
	// built-in page says (constant HTML without markup).
	Text template.HTML
	// Org is the id of the org whose account or site the refusal is about
	// (ACCOUNT_SUSPENDED, PAYMENT_REQUIRED, QUOTA_EXCEEDED,
	// STORAGE_QUOTA_EXCEEDED, UPGRADE_REQUIRED, SITE_INACTIVE); ""
	// otherwise. Anyone who visits the site reads what the page prints.
	Org string
	// RenewalURL is [billing] renewal_url for Org, {org} replaced by the
	// escaped id, on the refusals an org settles through its plan or
	// payment (PAYMENT_REQUIRED, QUOTA_EXCEEDED, STORAGE_QUOTA_EXCEEDED,
	// UPGRADE_REQUIRED); "" otherwise or when renewal_url is unset.
	RenewalURL string
}

// PagesConfig says where the error pages come from.
type PagesConfig struct {
	// Dir is [proxy] error_pages: the operator's templates; "": the
	// built-in pages only.
	Dir string
	// RenewalURL is [billing] renewal_url; "": no renewal link.
	RenewalURL string
}

// errorPage is the page of one status, or of one refusal code.
type errorPage struct {
	id     uint64 // tells pages apart in orgPages
	status int
	code   reason.Code // "" for a plain error
	tmpl   *template.Template
	file   string // the template's path; "" for the built-in one
	// perOrg: the page shows the org or its renewal URL, so each org's is
	// rendered on its first refusal; body is then the page without an org.
	perOrg bool
	body   []byte
}

// Bounds on the operator's templates: a file's size and a rendered page's
// (every kept page is in memory).
const (
	maxTemplateBytes = 1 << 20
	maxPageBytes     = 128 << 10
)

// sampleOrgs render each refusal page for two orgs at start: a page whose
// output differs between them, or whose template names .Org or
// .RenewalURL, is rendered per org.
var sampleOrgs = [2]string{"sample-org", "o2"}

// LoadErrorPages reads the templates of c.Dir, then renders every page
// with sample data: a template that does not parse, does not execute, or
// renders more than 128 KiB fails here, named by its file, as does a file
// whose name is no page's. It reads the disk; call it at start.
func LoadErrorPages(c PagesConfig) (*ErrorPages, error) {
	files, err := readPageTemplates(c.Dir)
	if err != nil {
		return nil, err
	}
	e := &ErrorPages{status: map[int]*errorPage{}, refusal: map[string]*errorPage{}, renewal: c.RenewalURL}
	e.orgs.seed = maphash.MakeSeed()
	var errs []error
	failed := map[string]bool{} // a file's first failure is enough
	add := func(status int, code reason.Code) *errorPage {
		p := &errorPage{id: uint64(len(e.status) + len(e.refusal) + 1), status: status, code: code}
		p.tmpl, p.file = pickTemplate(files, status, code)
		if err := e.prerender(p); err != nil && !failed[p.file] {
			failed[p.file] = true
			errs = append(errs, err)
		}
		return p
	}
	for _, status := range pageStatuses() {
		e.status[status] = add(status, "")
	}
	for _, en := range reason.All() {
		if en.Sender == reason.SentByProxy {
			e.refusal[string(en.Code)] = add(en.Status, en.Code)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// defaultPages are the built-in pages, without a renewal link: those of a
// nil *ErrorPages.
var defaultPages = sync.OnceValue(func() *ErrorPages {
	e, err := LoadErrorPages(PagesConfig{})
	if err != nil {
		panic(err)
	}
	return e
})

// get is e, or the built-in pages for a nil e.
func (e *ErrorPages) get() *ErrorPages {
	if e == nil {
		return defaultPages()
	}
	return e
}

// statusPage is the page of status; 500's for a status without one.
func (e *ErrorPages) statusPage(status int) *errorPage {
	if p := e.status[status]; p != nil {
		return p
	}
	return e.status[http.StatusInternalServerError]
}

// pageTemplate is one of the operator's templates.
type pageTemplate struct {
	tmpl *template.Template
	path string
}

// readPageTemplates parses the *.html files of dir by name; other files
// and subdirectories are left alone.
func readPageTemplates(dir string) (map[string]pageTemplate, error) {
	files := map[string]pageTemplate{}
	if dir == "" {
		return files, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("proxy.error_pages: %w", err)
	}
	names := pageNames()
	var errs []error
	for _, en := range entries {
		name := en.Name()
		if en.IsDir() || !strings.HasSuffix(name, ".html") || strings.HasPrefix(name, ".") {
			continue
		}
		path := filepath.Join(dir, name)
		if !names[strings.TrimSuffix(name, ".html")] {
			errs = append(errs, fmt.Errorf("proxy.error_pages: %s: not a page's name (STATUS.html for a 4xx or 5xx status, 4xx.html, 5xx.html, CODE.html for a Tollgate-Reason code, default.html)", path))
			continue
		}
		t, err := parsePageTemplate(path, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		files[name] = pageTemplate{tmpl: t, path: path}
	}
	return files, errors.Join(errs...)
}

// parsePageTemplate reads and parses one template file.
func parsePageTemplate(path, name string) (*template.Template, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("proxy.error_pages: %w", err)
	}
	if len(b) > maxTemplateBytes {
		return nil, fmt.Errorf("proxy.error_pages: %s: %d bytes, more than 1 MiB", path, len(b))
	}
	t, err := template.New(name).Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("proxy.error_pages: %s: %w", path, err)
	}
	return t, nil
}

// pageNames are the names (without .html) a template file may have.
func pageNames() map[string]bool {
	names := map[string]bool{"default": true, "4xx": true, "5xx": true}
	for _, s := range pageStatuses() {
		names[strconv.Itoa(s)] = true
	}
	for _, en := range reason.All() {
		if en.Sender == reason.SentByProxy {
			names[string(en.Code)] = true
		}
	}
	return names
}

// pickTemplate is the template of a page, the first there is of CODE.html
// (for a refusal), STATUS.html, 4xx.html or 5xx.html, default.html, and
// the built-in page.
func pickTemplate(files map[string]pageTemplate, status int, code reason.Code) (*template.Template, string) {
	names := []string{strconv.Itoa(status) + ".html", strconv.Itoa(status/100) + "xx.html", "default.html"}
	if code != "" {
		names = append([]string{string(code) + ".html"}, names...)
	}
	for _, n := range names {
		if f, ok := files[n]; ok {
			return f.tmpl, f.path
		}
	}
	return builtinTemplate, ""
}

// prerender renders p with sample data, which checks its template, and
// keeps the page when it is the same for every org.
func (e *ErrorPages) prerender(p *errorPage) error {
	what := fmt.Sprintf("the %d page", p.status)
	if p.code != "" {
		what = fmt.Sprintf("the %s page (%d)", p.code, p.status)
	}
	fail := func(err error) error {
		file := p.file
		if file == "" {
			file = "built-in page"
		}
		return fmt.Errorf("proxy.error_pages: %s: rendering %s: %w", file, what, err)
	}
	body, err := e.render(p, "")
	if err != nil {
		return fail(err)
	}
	p.body = body
	if !orgCodes[p.code] {
		return nil
	}
	a, err := e.render(p, sampleOrgs[0])
	if err != nil {
		return fail(err)
	}
	b, err := e.render(p, sampleOrgs[1])
	if err != nil {
		return fail(err)
	}
	p.perOrg = e.mentionsOrg(p) || !bytes.Equal(a, b)
	if !p.perOrg {
		p.body = a // the same for every org, renewal link included
	}
	return nil
}

// render executes p's template for org ("" for none).
func (e *ErrorPages) render(p *errorPage, org string) ([]byte, error) {
	d := PageData{Status: p.status, StatusText: http.StatusText(p.status), Reason: string(p.code),
		Text: template.HTML(errorText(p.status, p.code))}
	if !orgCodes[p.code] {
		org = ""
	}
	d.Org = org
	if org != "" && e.renewal != "" && renewalCodes[p.code] {
		d.RenewalURL = renewalURL(e.renewal, org)
	}
	var b bytes.Buffer
	if err := p.tmpl.Execute(&b, d); err != nil {
		return nil, err
	}
	if b.Len() > maxPageBytes {
		return nil, fmt.Errorf("%d bytes, more than 128 KiB", b.Len())
	}
	return b.Bytes(), nil
}

// mentionsOrg reports whether p's template (or one it defines) names the
// Org variable, or the RenewalURL variable where p has one.
func (e *ErrorPages) mentionsOrg(p *errorPage) bool {
	renewal := strings.Contains(e.renewal, "{org}") && renewalCodes[p.code]
	for _, t := range p.tmpl.Templates() {
		if t.Tree == nil || t.Tree.Root == nil {
			continue
		}
		src := t.Tree.Root.String()
		if strings.Contains(src, ".Org") || renewal && strings.Contains(src, ".RenewalURL") {
			return true
		}
	}
	return false
}

// renewalURL is the renewal URL template u for org: each {org} replaced by
// the id, escaped so that it stays one path segment or query value.
func renewalURL(u, org string) string {
	return strings.ReplaceAll(u, "{org}", strings.ReplaceAll(url.QueryEscape(org), "+", "%20"))
}

// orgPagesSlots bounds the pages kept for orgs: rendered (status, code,
// org) pages, in buckets of two picked by a hash of the org and page, a
// newer page taking the place of an older one. A page is a few KiB (at
// most 128).
const orgPagesSlots = 512

// orgPages keeps the pages rendered for an org, read without a lock.
type orgPages struct {
	seed  maphash.Seed
	slots [orgPagesSlots]atomic.Pointer[orgPage]
}

type orgPage struct {
	page *errorPage
	org  string
	body []byte
}

// get is p's page for org: kept, or rendered now and kept. org is a
// registry string (kept), never request bytes. A render that fails (its
// template passed at start with other data) gives the page without an org.
func (c *orgPages) get(e *ErrorPages, p *errorPage, org string) []byte {
	h := maphash.String(c.seed, org) ^ p.id*0x9e3779b97f4a7c15
	i := int(h&(orgPagesSlots-1)) &^ 1
	for j := i; j < i+2; j++ {
		if o := c.slots[j].Load(); o != nil && o.page == p && o.org == org {
			return o.body
		}
	}
	body, err := e.render(p, org)
	if err != nil {
		body = p.body
	}
	j := i
	if c.slots[i].Load() != nil && (c.slots[i+1].Load() == nil || h>>63 == 1) {
		j = i + 1
	}
	c.slots[j].Store(&orgPage{page: p, org: org, body: body})
	return body
}
