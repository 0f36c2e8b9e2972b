package k8sailor

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

func TestFormatPort(t *testing.T) {
	tests := []struct {
		port *k8sailorv1.ServicePort
		want string
	}{
		{
			&k8sailorv1.ServicePort{Port: 80, TargetPort: &k8sailorv1.ServicePort_TargetPortNumber{TargetPortNumber: 8088}, Protocol: k8sailorv1.Protocol_PROTOCOL_TCP},
			"80:8088/TCP",
		},
		{
			&k8sailorv1.ServicePort{Port: 80, NodePort: 31234, TargetPort: &k8sailorv1.ServicePort_TargetPortNumber{TargetPortNumber: 8088}, Protocol: k8sailorv1.Protocol_PROTOCOL_TCP},
			"31234:80:8088/TCP",
		},
		{
			&k8sailorv1.ServicePort{Port: 53, TargetPort: &k8sailorv1.ServicePort_TargetPortName{TargetPortName: "dns"}, Protocol: k8sailorv1.Protocol_PROTOCOL_UDP},
			"53:dns/UDP",
		},
		// Unset target port and protocol mean what they mean in Kubernetes.
		{&k8sailorv1.ServicePort{Port: 443}, "443:443/TCP"},
		{&k8sailorv1.ServicePort{Port: 9, Protocol: k8sailorv1.Protocol_PROTOCOL_SCTP}, "9:9/SCTP"},
	}
	for _, tt := range tests {
		if got := FormatPort(tt.port); got != tt.want {
			t.Errorf("FormatPort(%v) = %q, want %q", tt.port, got, tt.want)
		}
	}
}

func TestOK(t *testing.T) {
	for outcome, want := range map[k8sailorv1.Outcome]bool{
		k8sailorv1.Outcome_OUTCOME_UNSPECIFIED: false,
		k8sailorv1.Outcome_OUTCOME_CREATED:     true,
		k8sailorv1.Outcome_OUTCOME_UNCHANGED:   true,
		k8sailorv1.Outcome_OUTCOME_INVALID:     false,
		k8sailorv1.Outcome_OUTCOME_CONFLICT:    false,
		k8sailorv1.Outcome_OUTCOME_FAILED:      false,
		k8sailorv1.Outcome_OUTCOME_DENIED:      false,
		k8sailorv1.Outcome_OUTCOME_UPDATED:     true,
		k8sailorv1.Outcome_OUTCOME_DELETED:     true,
		k8sailorv1.Outcome_OUTCOME_NOT_FOUND:   false,
		k8sailorv1.Outcome(99):                 false, // from a newer server
	} {
		if got := OK(&k8sailorv1.CreateServicesResponse{Outcome: outcome}); got != want {
			t.Errorf("OK(%v) = %v, want %v", outcome, got, want)
		}
	}
	if got := OutcomeName(k8sailorv1.Outcome_OUTCOME_UNCHANGED); got != "UNCHANGED" {
		t.Errorf("OutcomeName = %q, want UNCHANGED", got)
	}
}

func TestRules(t *testing.T) {
	spec := &k8sailorv1.ServiceSpec{Type: k8sailorv1.ServiceType_SERVICE_TYPE_HEADLESS}
	got := append(Rules("80:8088", "@db.example.com"), Spec(spec))
	want := []*k8sailorv1.Rule{
		{Rule: &k8sailorv1.Rule_Raw{Raw: "80:8088"}},
		{Rule: &k8sailorv1.Rule_Raw{Raw: "@db.example.com"}},
		{Rule: &k8sailorv1.Rule_Spec{Spec: spec}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d rules, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("rule %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// scriptedServer streams the given results, then ends with err (nil for a clean end).
// It stands in for what a real server can't be made to do on demand: fail mid-stream.
type scriptedServer struct {
	k8sailorv1.UnimplementedExposureServiceServer
	results []*k8sailorv1.CreateServicesResponse
	err     error
	got     chan *k8sailorv1.CreateServicesRequest
}

func (s *scriptedServer) CreateServices(req *k8sailorv1.CreateServicesRequest, stream grpc.ServerStreamingServer[k8sailorv1.CreateServicesResponse]) error {
	s.got <- req
	for _, res := range s.results {
		if err := stream.Send(res); err != nil {
			return err
		}
	}
	return s.err
}

func dialScripted(t *testing.T, server *scriptedServer) *Client {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	grpcServer := grpc.NewServer()
	k8sailorv1.RegisterExposureServiceServer(grpcServer, server)
	go func() { _ = grpcServer.Serve(listener) }()
	t.Cleanup(grpcServer.Stop)

	client, err := Dial("passthrough:///bufconn", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return listener.DialContext(ctx)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func TestCreateServicesYieldsEachResultThenTheStatus(t *testing.T) {
	results := []*k8sailorv1.CreateServicesResponse{
		{Index: 1, Outcome: k8sailorv1.Outcome_OUTCOME_CREATED, ServiceName: "web-headless"},
		{Index: 0, Outcome: k8sailorv1.Outcome_OUTCOME_INVALID, Error: "rule 0 ..."},
	}
	server := &scriptedServer{
		results: results,
		err:     status.Error(codes.Unavailable, "API server unreachable"),
		got:     make(chan *k8sailorv1.CreateServicesRequest, 1),
	}
	client := dialScripted(t, server)
	req := &k8sailorv1.CreateServicesRequest{Namespace: "ns", Deployment: "web", Rules: Rules("99999", "#80")}

	var got []*k8sailorv1.CreateServicesResponse
	var errs []error
	for res, err := range client.CreateServices(t.Context(), req) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		got = append(got, res)
	}

	if sent := <-server.got; !proto.Equal(sent, req) {
		t.Errorf("server got %v, want %v", sent, req)
	}
	if len(got) != len(results) {
		t.Fatalf("got %d results, want %d", len(got), len(results))
	}
	for i := range results {
		if !proto.Equal(got[i], results[i]) {
			t.Errorf("result %d = %v, want %v", i, got[i], results[i])
		}
	}
	if len(errs) != 1 || status.Code(errs[0]) != codes.Unavailable {
		t.Errorf("errors = %v, want one UNAVAILABLE", errs)
	}
}

func TestCreateServicesEndsCleanlyAndStopsWhenTheCallerDoes(t *testing.T) {
	server := &scriptedServer{
		results: []*k8sailorv1.CreateServicesResponse{{Index: 0}, {Index: 1}, {Index: 2}},
		got:     make(chan *k8sailorv1.CreateServicesRequest, 2),
	}
	client := dialScripted(t, server)
	req := &k8sailorv1.CreateServicesRequest{Deployment: "web", Rules: Rules("80", "81", "82")}

	count := 0
	for _, err := range client.CreateServices(t.Context(), req) {
		if err != nil {
			t.Fatalf("clean stream yielded %v", err)
		}
		count++
	}
	if count != 3 {
		t.Errorf("got %d results, want 3", count)
	}

	for range client.CreateServices(t.Context(), req) {
		break // must not panic by yielding again after the loop stopped
	}
}
