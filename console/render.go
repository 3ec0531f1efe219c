package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// view is what every page template gets: the layout's fields and the
// page's own Data.
type view struct {
	Title string
	// Signed is false on the sign-in page and on errors before sign-in:
	// the layout then shows no navigation.
	Signed bool
	Org    string
	Scopes string
	// CSRF goes into every form of the page (a hidden field named csrf).
	CSRF string
	Nav  []navItem
	Data any
}

type navItem struct {
	Href, Label string
	Current     bool
}

var navPages = []navItem{{Prefix, "Overview", false}, {Prefix + "usage", "Usage", false},
	{Prefix + "sites", "Sites and domains", false}, {Prefix + "events", "Events", false}, {Prefix + "credit", "Prepaid credit", false},
	{Prefix + "billing", "Plan and billing", false}}

var funcs = template.FuncMap{
	"bytes": humanBytes,
	"limit": func(n int64, unit string) string {
		if n == 0 {
			return "unlimited"
		}
		if unit == "bytes" {
			return humanBytes(n)
		}
		return fmt.Sprint(n)
	},
	"date": func(v any) string {
		t, _ := v.(time.Time) // a registry record's times are sites.Instant
		if i, ok := v.(sites.Instant); ok {
			t = i.Time()
		}
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": strings.Join,
	"money": func(minor int64, currency string) string {
		sign := ""
		if minor < 0 {
			sign, minor = "-", -minor
		}
		return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, strings.ToUpper(currency))
	},
	"int64": func(n int) int64 { return int64(n) },
}

// parsePages parses each page of templates/ with the layout, by name.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes page name in the layout with status. It renders into a
// buffer first, so a template error is a 500 and never half a page.
func (c *Console) render(w http.ResponseWriter, s *session, status int, name, title string, data any) {
	v := view{Title: title, Data: data}
	if s != nil {
		v.Signed, v.Org, v.Scopes, v.CSRF = true, s.tenant.Org, strings.Join(s.tenant.Scopes, ", "), s.csrf
		for _, n := range navPages {
			n.Current = n.Label == title
			v.Nav = append(v.Nav, n)
		}
	}
	var buf bytes.Buffer
	if err := c.pages[name].Execute(&buf, v); err != nil {
		c.log.Error("console: rendering", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// humanBytes writes n in IEC units ("1.5 GiB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
