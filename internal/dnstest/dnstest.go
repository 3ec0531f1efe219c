// Package dnstest runs a small authoritative DNS server on loopback for
// tests: CNAME and TXT answers from maps the test changes at will.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Server answers UDP queries on 127.0.0.1.
type Server struct {
	conn  net.PacketConn
	mu    sync.Mutex
	cname map[string]string   // name -> target
	txt   map[string][]string // name -> texts
	// Queries counts the questions received.
	queries int
}

// Start serves until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{conn: conn, cname: map[string]string{}, txt: map[string][]string{}}
	go s.serve()
	t.Cleanup(func() { conn.Close() })
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// SetCNAME makes name an alias of target ("" removes it).
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if target == "" {
		delete(s.cname, fqdn(name))
		return
	}
	s.cname[fqdn(name)] = fqdn(target)
}

// SetTXT sets the TXT records of name (none removes them).
func (s *Server) SetTXT(name string, texts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txt[fqdn(name)] = texts
}

// Queries returns how many questions were asked.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

func fqdn(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) + "." }

func (s *Server) serve() {
	buf := make([]byte, 1500)
	for {
		n, addr, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := s.answer(buf[:n]); ok {
			s.conn.WriteTo(resp, addr)
		}
	}
}

func (s *Server) answer(req []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := strings.ToLower(q.Name.String())
	s.mu.Lock()
	s.queries++
	cname, hasCNAME := s.cname[name]
	txt := s.txt[name]
	s.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	var answers []dnsmessage.Resource
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case hasCNAME && (q.Type == dnsmessage.TypeCNAME || q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeAAAA):
		target, _ := dnsmessage.NewName(cname)
		hdr.Type = dnsmessage.TypeCNAME
		answers = append(answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.CNAMEResource{CNAME: target}})
	case q.Type == dnsmessage.TypeTXT && len(txt) > 0:
		hdr.Type = dnsmessage.TypeTXT
		answers = append(answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.TXTResource{TXT: txt}})
	case q.Type == dnsmessage.TypeA:
		// Every name exists with a loopback address, so "no CNAME" is an
		// answer, not an error.
		hdr.Type = dnsmessage.TypeA
		answers = append(answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}}})
	}
	if len(answers) == 0 && !hasCNAME && len(txt) == 0 && q.Type != dnsmessage.TypeAAAA {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, a := range answers {
		switch body := a.Body.(type) {
		case *dnsmessage.CNAMEResource:
			b.CNAMEResource(a.Header, *body)
		case *dnsmessage.TXTResource:
			b.TXTResource(a.Header, *body)
		case *dnsmessage.AResource:
			b.AResource(a.Header, *body)
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
