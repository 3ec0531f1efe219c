package content

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Limits of a _redirects file: past them the rest is ignored (and the
// parse reports it), so a tenant cannot make every request expensive.
const (
	MaxRedirectsBytes = 64 << 10
	MaxRedirectRules  = 1000
)

// Redirects are the rules of a site's _redirects file, a subset of
// Netlify's syntax, one rule a line:
//
//	/old          /new            # 301 by default
//	/blog/*       /posts/:splat   302
//	/app/*        /index.html     200   # a rewrite: served in place
//	/docs         https://docs.example.org/  301
//
// Supported: exact paths, a trailing "/*" with ":splat" in the target,
// statuses 301, 302, 303, 307, 308 and 200 (rewrite to a path of the same
// site). Placeholders other than :splat, query matching, conditions and
// forced ("!") rules are not. Rules apply only where no file exists (like
// Netlify's default shadowing), first match wins.
type Redirects struct {
	rules []redirectRule
}

type redirectRule struct {
	from   string // without the trailing "*" for a splat rule
	splat  bool
	to     string
	status int
}

// ParseRedirects reads a _redirects file. Malformed lines are skipped; the
// error (nil when all is well) says which, for the log.
func ParseRedirects(data []byte) (*Redirects, error) {
	var problems []string
	if len(data) > MaxRedirectsBytes {
		problems = append(problems, fmt.Sprintf("file over %d bytes: the rest is ignored", MaxRedirectsBytes))
		data = data[:MaxRedirectsBytes]
	}
	r := &Redirects{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), MaxRedirectsBytes)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(r.rules) == MaxRedirectRules {
			problems = append(problems, fmt.Sprintf("more than %d rules: the rest is ignored", MaxRedirectRules))
			break
		}
		rule, err := parseRule(f)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", n, err))
			continue
		}
		r.rules = append(r.rules, rule)
	}
	if len(problems) > 0 {
		return r, fmt.Errorf("_redirects: %s", strings.Join(problems, "; "))
	}
	return r, nil
}

func parseRule(f []string) (redirectRule, error) {
	if len(f) < 2 || len(f) > 3 {
		return redirectRule{}, fmt.Errorf("want FROM TO [STATUS], got %d fields", len(f))
	}
	rule := redirectRule{from: f[0], to: f[1], status: 301}
	if len(f) == 3 {
		st, err := strconv.Atoi(strings.TrimSuffix(f[2], "!"))
		if err != nil || strings.HasSuffix(f[2], "!") {
			return redirectRule{}, fmt.Errorf("status %q not supported", f[2])
		}
		rule.status = st
	}
	switch rule.status {
	case 200, 301, 302, 303, 307, 308:
	default:
		return redirectRule{}, fmt.Errorf("status %d not supported", rule.status)
	}
	if !strings.HasPrefix(rule.from, "/") || strings.ContainsAny(rule.from, "\x00:?") {
		return redirectRule{}, fmt.Errorf("from %q must be a path", rule.from)
	}
	if strings.HasSuffix(rule.from, "/*") {
		rule.from, rule.splat = strings.TrimSuffix(rule.from, "*"), true
	} else if strings.Contains(rule.from, "*") {
		return redirectRule{}, fmt.Errorf("from %q: '*' only at the end, after '/'", rule.from)
	}
	if strings.HasPrefix(rule.to, "/") {
		if strings.HasPrefix(rule.to, "//") {
			return redirectRule{}, fmt.Errorf("to %q: a scheme-relative URL is not allowed", rule.to)
		}
	} else {
		u, err := url.Parse(rule.to)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return redirectRule{}, fmt.Errorf("to %q must be a path or an http(s) URL", rule.to)
		}
		if rule.status == 200 {
			return redirectRule{}, fmt.Errorf("a 200 rewrite must target a path of the site, not %q", rule.to)
		}
	}
	if strings.ContainsAny(rule.to, "\x00\r\n") {
		return redirectRule{}, fmt.Errorf("to %q has control characters", rule.to)
	}
	return rule, nil
}

// Len is the number of rules.
func (r *Redirects) Len() int {
	if r == nil {
		return 0
	}
	return len(r.rules)
}

// Match returns the target and status of the first rule matching urlPath.
func (r *Redirects) Match(urlPath []byte) (to string, status int, ok bool) {
	if r == nil {
		return "", 0, false
	}
	for _, rule := range r.rules {
		switch {
		case rule.splat && bytes.HasPrefix(urlPath, []byte(rule.from)):
			to := strings.ReplaceAll(rule.to, ":splat", string(urlPath[len(rule.from):]))
			// The splat comes from the visitor: it must not smuggle a header
			// line or turn a path into another host ("//evil.example").
			if strings.ContainsAny(to, "\x00\r\n\\") || strings.HasPrefix(to, "//") {
				return "", 0, false
			}
			return to, rule.status, true
		case rule.splat && string(urlPath)+"/" == rule.from:
			return strings.ReplaceAll(rule.to, ":splat", ""), rule.status, true
		case !rule.splat && (string(urlPath) == rule.from || string(urlPath) == rule.from+"/"):
			return rule.to, rule.status, true
		}
	}
	return "", 0, false
}
