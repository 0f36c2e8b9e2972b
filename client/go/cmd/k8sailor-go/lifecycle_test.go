package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

func TestParseLifecycleArgs(t *testing.T) {
	t.Setenv("K8SAILOR_SERVER", "")
	got, err := parseLifecycleArgs("apply", []string{"web", "80:8088", "--prune", "-n", "prod", "#80:80", "--force", "--dry-run"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.deployment != "web" || got.namespace != "prod" || !got.prune || !got.force || !got.dryRun || len(got.rules) != 2 {
		t.Errorf("apply: got %+v", *got)
	}
	if got.rules[1].GetRaw() != "#80:80" {
		t.Errorf("apply: rule 1 = %v", got.rules[1])
	}

	got, err = parseLifecycleArgs("delete", []string{"web", "a", "--dry-run", "b"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.names, []string{"a", "b"}) || got.all || !got.dryRun {
		t.Errorf("delete: got %+v", *got)
	}
}

func TestParseLifecycleArgsRefusesWhatCannotBeSent(t *testing.T) {
	for _, tt := range []struct {
		command string
		args    []string
		want    string
	}{
		{"get", nil, "no deployment"},
		{"get", []string{"web", "extra"}, "get takes only the Deployment"},
		{"delete", []string{"web"}, "names or --all"},
		{"delete", []string{"web", "a", "--all"}, "names or --all"},
		{"apply", []string{"web"}, "no rules"},
	} {
		_, err := parseLifecycleArgs(tt.command, tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %v: got %v, want an error with %q", tt.command, tt.args, err, tt.want)
		}
	}
	// --prune belongs to apply only.
	if _, err := parseLifecycleArgs("delete", []string{"web", "--all", "--prune"}, io.Discard); err == nil {
		t.Error("delete --prune: want an error")
	}
}

func TestAppliedLinesShowTheDiff(t *testing.T) {
	res := &k8sailorv1.ApplyServicesResponse{
		Index: 0, Rule: "80:9090", Outcome: k8sailorv1.Outcome_OUTCOME_UPDATED, ServiceName: "web",
		Changes: []*k8sailorv1.FieldChange{
			{Path: "spec.ports[0].targetPort", Before: "8088", After: "9090"},
			{Path: "spec.ports[0].appProtocol", Before: "http"},
		},
	}
	want := []string{
		"updated (dry run)    web  (rule 0: 80:9090)",
		"  - spec.ports[0].targetPort: 8088",
		"  + spec.ports[0].targetPort: 9090",
		"  - spec.ports[0].appProtocol: http",
	}
	if got := formatApplied(res, true); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	pruned := &k8sailorv1.ApplyServicesResponse{Index: -1, Rule: "#80", Outcome: k8sailorv1.Outcome_OUTCOME_DELETED, ServiceName: "web-headless"}
	if got := formatApplied(pruned, false); !slices.Equal(got, []string{"deleted              web-headless  (pruned: #80)"}) {
		t.Errorf("pruned: got %q", got)
	}
}
