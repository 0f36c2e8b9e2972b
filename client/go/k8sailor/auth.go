package k8sailor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// WithTLS returns a dial option for TLS to the server. caFile (PEM) holds the CAs that
// verify the server's certificate; empty means the system's roots. certFile and keyFile
// (PEM), given together, are a client certificate for mutual TLS: they are read now, so
// a wrong file is an error here, and again for each new connection, so a certificate
// rotated on disk is used without a restart.
func WithTLS(caFile, certFile, keyFile string) (grpc.DialOption, error) {
	config, err := TLSConfig(caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

// TLSConfig is the *tls.Config that WithTLS uses, for callers that build their own
// credentials.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("k8sailor: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("k8sailor: CA file %s: no PEM certificate in it", caFile)
		}
		config.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("k8sailor: a client certificate and its key go together: give both files or neither")
	}
	if certFile != "" {
		pair := &keyPair{certFile: certFile, keyFile: keyFile}
		if _, err := pair.load(); err != nil {
			return nil, err
		}
		config.GetClientCertificate = pair.get
	}
	return config, nil
}

// keyPair is a client certificate read again for every handshake; when the files are
// half-way through a rotation (new certificate, old key) the last good pair is used.
type keyPair struct {
	certFile, keyFile string
	mu                sync.Mutex
	last              *tls.Certificate
}

func (p *keyPair) load() (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		return nil, fmt.Errorf("k8sailor: client certificate %s with key %s: %w", p.certFile, p.keyFile, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = &pair
	return &pair, nil
}

func (p *keyPair) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	pair, err := p.load()
	if err == nil {
		return pair, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil {
		return p.last, nil
	}
	return nil, err
}

// TokenFile is per-RPC credentials that send "authorization: Bearer <token>" with the
// token read from Path for every call: projected ServiceAccount tokens are rotated by
// the kubelet, so a token read once goes stale. gRPC sends it over TLS only.
type TokenFile struct {
	Path string
}

// GetRequestMetadata reads the token file.
func (t TokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	data, err := os.ReadFile(t.Path)
	if err != nil {
		return nil, fmt.Errorf("k8sailor: token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return nil, fmt.Errorf("k8sailor: token file %s is empty", t.Path)
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity is true: a bearer token is never sent in plaintext.
func (TokenFile) RequireTransportSecurity() bool { return true }

// WithTokenFile returns a dial option that sends the token in path with every call.
func WithTokenFile(path string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(TokenFile{Path: path})
}
