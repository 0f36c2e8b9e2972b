package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/k8sailor/k8sailor/client/go/k8sailor"
)

// commonFlags are the flags every subcommand has: where the server is, which namespace, how
// long to wait, how to print, and the TLS and token files that prove who the caller is.
type commonFlags struct {
	server    string
	namespace string
	json      bool
	timeout   time.Duration
	// TLS and the caller's identity; empty means not given.
	caFile, certFile, keyFile, tokenFile string
}

// register adds the common flags to fs, with their defaults from the environment.
func (c *commonFlags) register(fs *flag.FlagSet) {
	server := os.Getenv("K8SAILOR_SERVER")
	if server == "" {
		server = k8sailor.DefaultAddress
	}
	c.timeout = 30 * time.Second
	fs.StringVar(&c.server, "server", server, "`host:port` of k8sailor-server; $K8SAILOR_SERVER sets the default")
	fs.StringVar(&c.namespace, "namespace", "", "`namespace` of the Deployment and the Services (default \"default\")")
	fs.StringVar(&c.namespace, "n", "", "short for --namespace")
	fs.BoolVar(&c.json, "json", false, "print each result as one line of protobuf JSON")
	fs.Var(durationFlag{&c.timeout}, "timeout", "deadline for the whole request: a `duration` such as 30s, or seconds such as 2.5")
	fs.StringVar(&c.caFile, "ca-file", os.Getenv("K8SAILOR_CA_FILE"), "PEM CA bundle that signed the server's certificate: use TLS; $K8SAILOR_CA_FILE sets the default")
	fs.StringVar(&c.certFile, "cert-file", os.Getenv("K8SAILOR_CERT_FILE"), "PEM client certificate for mutual TLS; $K8SAILOR_CERT_FILE sets the default")
	fs.StringVar(&c.keyFile, "key-file", os.Getenv("K8SAILOR_KEY_FILE"), "PEM private key of --cert-file; $K8SAILOR_KEY_FILE sets the default")
	fs.StringVar(&c.tokenFile, "token-file", os.Getenv("K8SAILOR_TOKEN_FILE"), "`file` with a bearer token, read for each call (TLS only); $K8SAILOR_TOKEN_FILE sets the default")
}

// dialOptions: plaintext unless a TLS file or a token file is given; TLS with the system's
// roots when only --token-file or a client certificate is.
func (c *commonFlags) dialOptions() ([]grpc.DialOption, error) {
	if c.caFile == "" && c.certFile == "" && c.keyFile == "" && c.tokenFile == "" {
		return nil, nil
	}
	transport, err := k8sailor.WithTLS(c.caFile, c.certFile, c.keyFile)
	if err != nil {
		return nil, err
	}
	all := []grpc.DialOption{transport}
	if c.tokenFile != "" {
		all = append(all, k8sailor.WithTokenFile(c.tokenFile))
	}
	return all, nil
}

// dial connects to the server, or says on stderr why it cannot.
func (c *commonFlags) dial(stderr io.Writer) (*k8sailor.Client, bool) {
	dialOptions, err := c.dialOptions()
	if err != nil {
		fmt.Fprintf(stderr, "k8sailor-go: %v\n", err)
		return nil, false
	}
	client, err := k8sailor.Dial(c.server, dialOptions...)
	if err != nil {
		fmt.Fprintf(stderr, "k8sailor-go: %v\n", err)
		return nil, false
	}
	return client, true
}

// requestFailed reports a failed request: its gRPC code and message, on stderr.
func requestFailed(stderr io.Writer, err error) int {
	st := status.Convert(err)
	fmt.Fprintf(stderr, "k8sailor-go: %s: %s\n", code.Code(st.Code()), st.Message())
	return exitRequestFailed
}

// printJSON prints one message as a line of protobuf JSON.
func printJSON(stdout, stderr io.Writer, message proto.Message) bool {
	line, err := jsonOptions.Marshal(message)
	if err != nil {
		fmt.Fprintf(stderr, "k8sailor-go: %v\n", err)
		return false
	}
	fmt.Fprintln(stdout, string(line))
	return true
}

// allReported checks the server's promise of one result per rule: a rule it never reported is
// not known to exist.
func allReported(stderr io.Writer, reported map[int32]bool, rules int) bool {
	if len(reported) == rules {
		return true
	}
	fmt.Fprintf(stderr, "k8sailor-go: the server reported %d of %d rules\n", len(reported), rules)
	return false
}
