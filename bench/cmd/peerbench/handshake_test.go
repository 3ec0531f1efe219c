package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The handshake client completes full handshakes against a real TLS server,
// reports what was negotiated, and counts a certificate other than the
// verified one as a failure.
func TestMeasureHandshakes(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != hostTLS {
			http.Error(w, "wrong host "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		w.Write([]byte("ok"))
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")
	leaf := srv.Certificate().Raw

	rep := measureHandshakes(addr, hostTLS, "/", leaf, 4, 300*time.Millisecond)
	if rep.Handshakes == 0 || rep.Failed != 0 {
		t.Fatalf("handshakes %d, failed %d (%s); want some and none", rep.Handshakes, rep.Failed, rep.FirstError)
	}
	want := tlsInfo{Protocol: "TLSv1.3", Cipher: rep.TLS.Cipher, KeyExchange: "X25519", ALPN: "http/1.1"}
	if rep.TLS != want || rep.TLS.Cipher == "" {
		t.Errorf("TLS = %+v, want %+v", rep.TLS, want)
	}
	if rep.P50 <= 0 || rep.P99 < rep.P50 || rep.Elapsed != 300*time.Millisecond {
		t.Errorf("p50 %v, p99 %v, elapsed %v", rep.P50, rep.P99, rep.Elapsed)
	}

	other := append([]byte{}, leaf...)
	other[len(other)-1] ^= 1
	rep = measureHandshakes(addr, hostTLS, "/", other, 2, 100*time.Millisecond)
	if rep.Handshakes != 0 || rep.Failed == 0 || !strings.Contains(rep.FirstError, errLeaf.Error()) {
		t.Errorf("with another leaf: handshakes %d, failed %d, first error %q; want only failures", rep.Handshakes, rep.Failed, rep.FirstError)
	}
}
