package sites

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadHost is returned for a Host header or domain name that is not a valid
// hostname. The proxy answers it with 400.
var ErrBadHost = errors.New("malformed host")

// MaxHostLen is the longest hostname accepted (RFC 1035: 253 octets).
const MaxHostLen = 253

// NormalizeDomain turns a domain as an operator types it into the form stored
// and routed: IDNA to punycode, lower case, no trailing dot. It refuses ports,
// IP literals, wildcards and anything that is not a hostname.
func NormalizeDomain(name string) (string, error) {
	name = strings.TrimSpace(name)
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", fmt.Errorf("%w: empty domain", ErrBadHost)
	}
	if net.ParseIP(name) != nil || strings.HasPrefix(name, "[") {
		return "", fmt.Errorf("%w: %q is an IP address, not a domain", ErrBadHost, name)
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: %q is not valid UTF-8", ErrBadHost, name)
	}
	ascii, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrBadHost, name, err)
	}
	ascii = strings.ToLower(ascii)
	// What we store must normalize to itself (fixed point), or routing and
	// certificates would disagree about the name.
	if again, err := idna.Lookup.ToASCII(ascii); err != nil || again != ascii {
		return "", fmt.Errorf("%w: %q does not normalize consistently", ErrBadHost, name)
	}
	if err := checkHostname(ascii); err != nil {
		return "", err
	}
	return ascii, nil
}

func checkHostname(h string) error {
	if len(h) == 0 || len(h) > MaxHostLen {
		return fmt.Errorf("%w: length %d not in 1..%d", ErrBadHost, len(h), MaxHostLen)
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return fmt.Errorf("%w: %q has an empty label", ErrBadHost, h)
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case c == '-':
			if label == 0 {
				return fmt.Errorf("%w: %q has a label starting with '-'", ErrBadHost, h)
			}
		default:
			return fmt.Errorf("%w: %q contains %q", ErrBadHost, h, c)
		}
		label++
		if label > 63 {
			return fmt.Errorf("%w: %q has a label over 63 characters", ErrBadHost, h)
		}
	}
	if label == 0 {
		return fmt.Errorf("%w: %q ends with an empty label", ErrBadHost, h)
	}
	return nil
}

// AppendHostKey appends to dst the routing key of a request's Host header: the
// port stripped, lower case, no trailing dot. It does not allocate when dst has
// room and the host is ASCII (what every browser sends); a non-ASCII host is
// converted with IDNA on a slower path. It returns ErrBadHost for anything that
// cannot be a hostname, so the caller can answer 400.
func AppendHostKey(dst, host []byte) ([]byte, error) {
	if len(host) == 0 {
		return dst, ErrBadHost
	}
	if host[0] == '[' { // IPv6 literal: [::1]:8080. Keep the bracketed form; it routes nowhere.
		end := -1
		for i, c := range host {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 || (end+1 < len(host) && !validPort(host[end+1:])) {
			return dst, ErrBadHost
		}
		for _, c := range host[1:end] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return dst, ErrBadHost
			}
		}
		return append(dst, host[:end+1]...), nil
	}
	// Strip the port.
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			if !validPort(host[i:]) {
				return dst, ErrBadHost
			}
			host = host[:i]
			break
		}
		if host[i] < '0' || host[i] > '9' {
			break
		}
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) == 0 || len(host) > MaxHostLen {
		return dst, ErrBadHost
	}
	start := len(dst)
	label := 0
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '.':
			if label == 0 {
				return dst[:start], ErrBadHost
			}
			label = -1
		case c >= 0x80:
			return appendIDNAHost(dst[:start], host)
		default:
			return dst[:start], ErrBadHost
		}
		label++
		if label > 63 {
			return dst[:start], ErrBadHost
		}
		dst = append(dst, c)
	}
	if label == 0 { // "a..": an empty last label
		return dst[:start], ErrBadHost
	}
	return dst, nil
}

func appendIDNAHost(dst, host []byte) ([]byte, error) {
	n, err := NormalizeDomain(string(host))
	if err != nil {
		return dst, ErrBadHost
	}
	return append(dst, n...), nil
}

// validPort reports whether p is ":" followed by 1-5 digits (or just ":").
func validPort(p []byte) bool {
	if len(p) == 0 || p[0] != ':' || len(p) > 6 {
		return false
	}
	for _, c := range p[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
