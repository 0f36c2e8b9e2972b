package k8sailor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

// testCA issues certificates for a TLS server of the test's own.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key: for 127.0.0.1 when server, else a client CN.
func (ca *testCA) issue(t *testing.T, commonName string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"dev"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		template.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// whoServer answers every call with one result whose error field says who called: the
// client certificate's CN and the authorization metadata it got.
type whoServer struct {
	k8sailorv1.UnimplementedExposureServiceServer
}

func (whoServer) CreateServices(_ *k8sailorv1.CreateServicesRequest, stream grpc.ServerStreamingServer[k8sailorv1.CreateServicesResponse]) error {
	cn := "-"
	if p, ok := peer.FromContext(stream.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			cn = info.State.PeerCertificates[0].Subject.CommonName
		}
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	return stream.Send(&k8sailorv1.CreateServicesResponse{Error: cn + " " + strings.Join(md.Get("authorization"), ",")})
}

// serveTLS starts whoServer over TLS on a free port (mutual when ca is given).
func serveTLS(t *testing.T, ca *testCA, clientCA *testCA) string {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, "k8sailor", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{pair}}
	if clientCA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(clientCA.cert)
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer(grpc.Creds(credentials.NewTLS(config)))
	k8sailorv1.RegisterExposureServiceServer(server, whoServer{})
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return listener.Addr().String()
}

// who makes one call and returns what the server saw, or the call's error.
func who(t *testing.T, client *Client) (string, error) {
	t.Helper()
	req := &k8sailorv1.CreateServicesRequest{Deployment: "web", Rules: Rules("80")}
	for res, err := range client.CreateServices(t.Context(), req) {
		if err != nil {
			return "", err
		}
		return res.GetError(), nil
	}
	return "", nil
}

func TestMutualTLSPresentsTheClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.issue(t, "alice", false)
	caFile := writeFile(t, dir, "ca.crt", ca.pem)
	option, err := WithTLS(caFile, writeFile(t, dir, "tls.crt", certPEM), writeFile(t, dir, "tls.key", keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	client, err := Dial(serveTLS(t, ca, ca), option)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	got, err := who(t, client)
	if err != nil || got != "alice " {
		t.Errorf("server saw %q (%v), want the client certificate alice and no token", got, err)
	}
}

func TestTheTokenFileIsReadForEveryCall(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", []byte("first\n"))
	option, err := WithTLS(writeFile(t, dir, "ca.crt", ca.pem), "", "")
	if err != nil {
		t.Fatal(err)
	}
	client, err := Dial(serveTLS(t, ca, nil), option, WithTokenFile(tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	first, err := who(t, client)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "token", []byte("second"))
	second, err := who(t, client)
	if err != nil {
		t.Fatal(err)
	}
	if first != "- Bearer first" || second != "- Bearer second" {
		t.Errorf("server saw %q then %q, want the token of the moment each time", first, second)
	}
}

func TestATokenIsNeverSentInPlaintext(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	k8sailorv1.RegisterExposureServiceServer(server, whoServer{})
	go func() { _ = server.Serve(listener) }()
	defer server.Stop()
	client, err := Dial(listener.Addr().String(), WithTokenFile(writeFile(t, t.TempDir(), "token", []byte("secret"))))
	if err == nil {
		defer client.Close()
		_, err = who(t, client)
	}
	if err == nil || !strings.Contains(err.Error(), "transport") {
		t.Errorf("got %v, want a refusal to send credentials without transport security", err)
	}
}

func TestWithTLSRefusesFilesThatCannotWork(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.issue(t, "alice", false)
	_, otherKey := ca.issue(t, "bob", false)
	caFile := writeFile(t, dir, "ca.crt", ca.pem)
	certFile := writeFile(t, dir, "tls.crt", certPEM)
	writeFile(t, dir, "tls.key", keyPEM)
	tests := []struct{ ca, cert, key, want string }{
		{filepath.Join(dir, "missing.crt"), "", "", "CA file"},
		{writeFile(t, dir, "empty.crt", nil), "", "", "no PEM certificate"},
		{caFile, certFile, "", "go together"},
		{caFile, certFile, writeFile(t, dir, "other.key", otherKey), "client certificate"},
	}
	for _, tt := range tests {
		if _, err := WithTLS(tt.ca, tt.cert, tt.key); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WithTLS(%q, %q, %q) = %v, want an error about %s", tt.ca, tt.cert, tt.key, err, tt.want)
		}
	}
}
