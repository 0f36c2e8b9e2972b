// Package k8sailor is a small Go client for the k8sailor ExposureService: it dials a
// server, sends a CreateServicesRequest and hands back the streamed results one by one.
//
// The messages themselves are the generated ones in package k8sailorv1
// (github.com/k8sailor/k8sailor/client/go/k8sailor/v1); this package only adds a
// connection, rule constructors, and the few helpers every caller would otherwise
// write again.
package k8sailor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

// DefaultAddress is where k8sailor-server listens unless told otherwise.
const DefaultAddress = "127.0.0.1:50051"

// Client is a connection to a k8sailor server. It is safe for concurrent use; close it
// when done.
type Client struct {
	conn *grpc.ClientConn
	// Exposure is the generated stub, for callers that want the raw stream.
	Exposure k8sailorv1.ExposureServiceClient
}

// Dial returns a Client for target ("host:port", or any gRPC target name). Like
// grpc.NewClient it does not connect yet: an unreachable server shows up as an
// UNAVAILABLE error from the first call. The connection is plaintext unless opts
// carry WithTLS (or grpc.WithTransportCredentials); later options override earlier
// ones. WithTokenFile adds a bearer token to every call.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(target, all...)
	if err != nil {
		return nil, fmt.Errorf("k8sailor: dial %s: %w", target, err)
	}
	return &Client{conn: conn, Exposure: k8sailorv1.NewExposureServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// CreateServices sends req and yields one result per rule as the server finishes it,
// in the order the rules finish: match them to the rules by GetIndex. When the request
// as a whole fails it yields a nil result and the gRPC status error once, and stops;
// use status.Code(err) for NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE and the like.
// The deadline is the context's.
func (c *Client) CreateServices(ctx context.Context, req *k8sailorv1.CreateServicesRequest, opts ...grpc.CallOption) iter.Seq2[*k8sailorv1.CreateServicesResponse, error] {
	return results(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[k8sailorv1.CreateServicesResponse], error) {
		return c.Exposure.CreateServices(ctx, req, opts...)
	})
}

// ListServices returns the Services that the Deployment owns, sorted by name, each with
// the canonical rule it was made from. NOT_FOUND when there is no such Deployment.
func (c *Client) ListServices(ctx context.Context, req *k8sailorv1.ListServicesRequest, opts ...grpc.CallOption) ([]*k8sailorv1.ExposedService, error) {
	res, err := c.Exposure.ListServices(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	return res.GetServices(), nil
}

// DeleteServices deletes Services the Deployment owns, by name or all of them, and
// yields one result per Service as the server finishes it; errors as CreateServices.
func (c *Client) DeleteServices(ctx context.Context, req *k8sailorv1.DeleteServicesRequest, opts ...grpc.CallOption) iter.Seq2[*k8sailorv1.DeleteServicesResponse, error] {
	return results(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[k8sailorv1.DeleteServicesResponse], error) {
		return c.Exposure.DeleteServices(ctx, req, opts...)
	})
}

// ApplyServices makes the Deployment's Services what the rules say (server-side apply)
// and yields one result per rule, with what changed, plus one per pruned Service
// (index -1); errors as CreateServices.
func (c *Client) ApplyServices(ctx context.Context, req *k8sailorv1.ApplyServicesRequest, opts ...grpc.CallOption) iter.Seq2[*k8sailorv1.ApplyServicesResponse, error] {
	return results(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[k8sailorv1.ApplyServicesResponse], error) {
		return c.Exposure.ApplyServices(ctx, req, opts...)
	})
}

// results yields what a server stream sends, then its error (if any) once.
func results[T any](ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[T], error)) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		// Cancelling ends the stream on the server too when the caller stops early.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := open(ctx)
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			res, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(res, nil) {
				return
			}
		}
	}
}

// Raw returns a rule written as compact text, such as "80:8088" or "@db.example.com".
func Raw(text string) *k8sailorv1.Rule {
	return &k8sailorv1.Rule{Rule: &k8sailorv1.Rule_Raw{Raw: text}}
}

// Spec returns a rule given as a structured spec.
func Spec(spec *k8sailorv1.ServiceSpec) *k8sailorv1.Rule {
	return &k8sailorv1.Rule{Rule: &k8sailorv1.Rule_Spec{Spec: spec}}
}

// Rules returns one compact text rule per argument.
func Rules(texts ...string) []*k8sailorv1.Rule {
	rules := make([]*k8sailorv1.Rule, len(texts))
	for i, text := range texts {
		rules[i] = Raw(text)
	}
	return rules
}

// OK reports whether the rule's Service now exists as asked: created (or, in a dry run,
// creatable) or already there unchanged.
func OK(res *k8sailorv1.CreateServicesResponse) bool {
	return Done(res.GetOutcome())
}

// Done reports whether an outcome leaves the Service as the caller asked: created,
// unchanged, updated, or (for a delete or a prune) deleted. An outcome this client does
// not know is not done.
func Done(o k8sailorv1.Outcome) bool {
	switch o {
	case k8sailorv1.Outcome_OUTCOME_CREATED, k8sailorv1.Outcome_OUTCOME_UNCHANGED,
		k8sailorv1.Outcome_OUTCOME_UPDATED, k8sailorv1.Outcome_OUTCOME_DELETED:
		return true
	default:
		return false
	}
}

// OutcomeName returns the outcome without its enum prefix, such as "CREATED".
func OutcomeName(o k8sailorv1.Outcome) string {
	return strings.TrimPrefix(o.String(), "OUTCOME_")
}

// FormatPort writes a port in rule notation, "[nodePort:]port:target/PROTOCOL", as the
// Python client prints it: "80:8088/TCP", "31234:80:8088/TCP", "53:dns/UDP".
func FormatPort(p *k8sailorv1.ServicePort) string {
	var b strings.Builder
	if p.GetNodePort() != 0 {
		b.WriteString(strconv.Itoa(int(p.GetNodePort())))
		b.WriteByte(':')
	}
	b.WriteString(strconv.Itoa(int(p.GetPort())))
	b.WriteByte(':')
	switch target := p.GetTargetPort().(type) {
	case *k8sailorv1.ServicePort_TargetPortName:
		b.WriteString(target.TargetPortName)
	case *k8sailorv1.ServicePort_TargetPortNumber:
		b.WriteString(strconv.Itoa(int(target.TargetPortNumber)))
	default: // unset means the same as the port
		b.WriteString(strconv.Itoa(int(p.GetPort())))
	}
	b.WriteByte('/')
	b.WriteString(protocolName(p.GetProtocol()))
	return b.String()
}

func protocolName(p k8sailorv1.Protocol) string {
	if p == k8sailorv1.Protocol_PROTOCOL_UNSPECIFIED {
		return "TCP" // as in Kubernetes
	}
	return strings.TrimPrefix(p.String(), "PROTOCOL_")
}
