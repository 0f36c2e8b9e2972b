package main

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/k8sailor/k8sailor/client/go/k8sailor"
	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

const resolverJSON = `{"name":"resolver","type":"SERVICE_TYPE_CLUSTER_IP","ports":[{"port":53,"targetPortName":"dns","protocol":"PROTOCOL_UDP"}]}`

var resolver = &k8sailorv1.ServiceSpec{
	Name: "resolver",
	Type: k8sailorv1.ServiceType_SERVICE_TYPE_CLUSTER_IP,
	Ports: []*k8sailorv1.ServicePort{{
		Port:       53,
		TargetPort: &k8sailorv1.ServicePort_TargetPortName{TargetPortName: "dns"},
		Protocol:   k8sailorv1.Protocol_PROTOCOL_UDP,
	}},
}

func TestParseArgs(t *testing.T) {
	t.Setenv("K8SAILOR_SERVER", "")
	tests := []struct {
		name string
		args []string
		want options
	}{
		{
			name: "deployment first, flags after the rules",
			args: []string{"web", "80:8088", "#80:80", "-n", "prod", "--dry-run", "!31234:80:8088", "@www.example.com"},
			want: options{
				commonFlags: commonFlags{server: k8sailor.DefaultAddress, namespace: "prod", timeout: 30 * time.Second},
				deployment:  "web", dryRun: true,
				rules: k8sailor.Rules("80:8088", "#80:80", "!31234:80:8088", "@www.example.com"),
			},
		},
		{
			name: "--deployment later makes every positional argument a rule, in order with --spec",
			args: []string{"80", "--spec", resolverJSON, "81", "--deployment", "web", "--timeout", "2.5", "--json", "--server", "k:1"},
			want: options{
				commonFlags: commonFlags{server: "k:1", json: true, timeout: 2500 * time.Millisecond},
				deployment:  "web",
				rules:       []*k8sailorv1.Rule{k8sailor.Raw("80"), k8sailor.Spec(resolver), k8sailor.Raw("81")},
			},
		},
		{
			name: "a spec alone, and -- before arguments that look like flags",
			args: []string{"--namespace=x", "--spec=" + resolverJSON, "--timeout", "1m", "--", "web", "-odd"},
			want: options{
				commonFlags: commonFlags{server: k8sailor.DefaultAddress, namespace: "x", timeout: time.Minute},
				deployment:  "web",
				rules:       []*k8sailorv1.Rule{k8sailor.Spec(resolver), k8sailor.Raw("-odd")},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got.server != tt.want.server || got.namespace != tt.want.namespace || got.deployment != tt.want.deployment ||
				got.dryRun != tt.want.dryRun || got.json != tt.want.json || got.timeout != tt.want.timeout {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
			if len(got.rules) != len(tt.want.rules) {
				t.Fatalf("got rules %v, want %v", got.rules, tt.want.rules)
			}
			for i := range got.rules {
				if !proto.Equal(got.rules[i], tt.want.rules[i]) {
					t.Errorf("rule %d = %v, want %v", i, got.rules[i], tt.want.rules[i])
				}
			}
		})
	}
}

func TestParseArgsRefusesWhatCannotBeSent(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"web"},
		{"--deployment", "web"},
		{"web", "--spec", `{"nmae":"typo"}`},
		{"web", "80", "--timeout", "soon"},
		{"web", "80", "--timeout", "0"},
		{"web", "80", "--bogus"},
	} {
		if got, err := parseArgs(args, io.Discard); err == nil {
			t.Errorf("parseArgs(%q) = %+v, want an error", args, *got)
		}
	}
}

func TestRowsLineUpWithTheHeader(t *testing.T) {
	res := &k8sailorv1.CreateServicesResponse{
		Index:       2,
		Outcome:     k8sailorv1.Outcome_OUTCOME_CREATED,
		ServiceName: "web-nodeport",
		ClusterIp:   "10.96.0.12",
		Ports: []*k8sailorv1.ServicePort{{
			Port: 80, NodePort: 31234, Protocol: k8sailorv1.Protocol_PROTOCOL_TCP,
			TargetPort: &k8sailorv1.ServicePort_TargetPortNumber{TargetPortNumber: 8088},
		}},
	}
	line, err := formatResult(res, false)
	if err != nil {
		t.Fatal(err)
	}
	header := formatHeader()
	want := "2      CREATED    web-nodeport              10.96.0.12       31234:80:8088/TCP"
	if line != want {
		t.Errorf("row\n%q, want\n%q", line, want)
	}
	for _, column := range []string{"OUTCOME", "SERVICE", "CLUSTER-IP", "PORTS", "ERROR"} {
		at := strings.Index(header, column)
		if at <= 0 || (column != "ERROR" && line[at-2:at] != "  ") {
			t.Errorf("column %s at %d does not line up in\n%s\n%s", column, at, header, line)
		}
	}

	failed, _ := formatResult(&k8sailorv1.CreateServicesResponse{Index: 1, Outcome: k8sailorv1.Outcome_OUTCOME_INVALID, Error: "node port 99999 is outside 30000-32767"}, false)
	if !strings.HasPrefix(failed, "1      INVALID    -  ") || !strings.HasSuffix(failed, "  node port 99999 is outside 30000-32767") {
		t.Errorf("failed row = %q", failed)
	}
}

func TestJSONHasEveryFieldEvenTheZeroIndex(t *testing.T) {
	line, err := formatResult(&k8sailorv1.CreateServicesResponse{Outcome: k8sailorv1.Outcome_OUTCOME_UNCHANGED}, true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, "\n") {
		t.Errorf("JSON spans lines: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	if got["index"] != 0.0 || got["outcome"] != "OUTCOME_UNCHANGED" || got["serviceName"] != "" {
		t.Errorf("JSON = %s", line)
	}
}

func TestTLSFlagsAndTheirEnvironmentDefaults(t *testing.T) {
	t.Setenv("K8SAILOR_CA_FILE", "/env/ca.crt")
	t.Setenv("K8SAILOR_TOKEN_FILE", "/env/token")
	t.Setenv("K8SAILOR_CERT_FILE", "")
	t.Setenv("K8SAILOR_KEY_FILE", "")
	got, err := parseArgs([]string{"web", "80", "--cert-file", "tls.crt", "--key-file=tls.key", "--token-file", "/run/token"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := [4]string{"/env/ca.crt", "tls.crt", "tls.key", "/run/token"}
	if have := [4]string{got.caFile, got.certFile, got.keyFile, got.tokenFile}; have != want {
		t.Errorf("TLS files = %q, want %q (flags win over the environment)", have, want)
	}
	if _, err := (&commonFlags{certFile: "tls.crt"}).dialOptions(); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("a certificate without its key: %v, want an error", err)
	}
	if plain, err := (&commonFlags{}).dialOptions(); err != nil || plain != nil {
		t.Errorf("no TLS flags: %v, %v, want plaintext (no options)", plain, err)
	}
}
