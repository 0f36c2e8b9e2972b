package main

// The subcommands that manage what CreateServices made, the Go twins of the Python CLI's
// `k8sailor get|delete|apply`:
//
//	k8sailor-go get [flags] DEPLOYMENT
//	k8sailor-go delete [flags] DEPLOYMENT (NAME... | --all) [--dry-run]
//	k8sailor-go apply [flags] DEPLOYMENT RULE... [--spec JSON]... [--prune] [--force] [--dry-run]

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/k8sailor/k8sailor/client/go/k8sailor"
	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

const lifecycleUsage = `usage: k8sailor-go get [flags] DEPLOYMENT
       k8sailor-go delete [flags] DEPLOYMENT (NAME... | --all) [--dry-run]
       k8sailor-go apply [flags] DEPLOYMENT RULE... [--spec JSON]... [--prune] [--force] [--dry-run]

get lists the Services a Deployment owns and the rules they were made from. delete deletes
Services it owns (never anyone else's). apply makes its Services what the rules say with
server-side apply, prints what changed as a diff, and with --prune deletes the Services of
the Deployment that no rule names.

Exit status: 0 everything done, 1 some Service or rule was not,
2 the request failed (gRPC status on stderr) or the command line is wrong.
TLS and identity flags as for expose (k8sailor-go -h).

Flags:
`

// lifecycleOptions is a parsed get, delete or apply command line.
type lifecycleOptions struct {
	commonFlags
	command    string
	deployment string
	dryRun     bool
	all        bool
	prune      bool
	force      bool
	names      []string           // delete
	rules      []*k8sailorv1.Rule // apply
}

// parseLifecycleArgs parses the arguments after the subcommand; flags may come before,
// between or after the positional arguments, and "--" ends them.
func parseLifecycleArgs(command string, args []string, stderr io.Writer) (*lifecycleOptions, error) {
	opts := &lifecycleOptions{command: command}
	list := &ruleList{firstPositional: -1}

	fs := flag.NewFlagSet("k8sailor-go "+command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), lifecycleUsage)
		fs.PrintDefaults()
	}
	opts.register(fs)
	if command != "get" {
		fs.BoolVar(&opts.dryRun, "dry-run", false, "say what would happen, change nothing")
	}
	if command == "delete" {
		fs.BoolVar(&opts.all, "all", false, "delete every Service the Deployment owns")
	}
	if command == "apply" {
		fs.BoolVar(&opts.prune, "prune", false, "delete owned Services that no rule names")
		fs.BoolVar(&opts.force, "force", false, "take over fields another field manager owns (kubectl apply --force-conflicts)")
		fs.Var(specFlag{list}, "spec", "a structured rule: k8sailor.v1.ServiceSpec as protobuf `JSON` (repeatable)")
	}

	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError{err}
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if len(positional) == 0 {
		return nil, errors.New("no deployment: name it as the first argument")
	}
	opts.deployment, positional = positional[0], positional[1:]
	switch command {
	case "get":
		if len(positional) > 0 {
			return nil, fmt.Errorf("get takes only the Deployment, not %q", positional)
		}
	case "delete":
		if opts.all == (len(positional) > 0) {
			return nil, errors.New("give the Services' names or --all (one of them)")
		}
		opts.names = positional
	case "apply":
		for _, text := range positional {
			list.addPositional(text)
		}
		if len(list.rules) == 0 {
			return nil, errors.New("no rules: give at least one RULE or --spec")
		}
		opts.rules = list.rules
	}
	return opts, nil
}

func runLifecycle(ctx context.Context, command string, args []string, stdout, stderr io.Writer) int {
	opts, err := parseLifecycleArgs(command, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.As(err, new(flagError)) {
		return exitRequestFailed
	}
	if err != nil {
		fmt.Fprintf(stderr, "k8sailor-go %s: %v (see k8sailor-go %s -h)\n", command, err, command)
		return exitRequestFailed
	}
	client, ok := opts.dial(stderr)
	if !ok {
		return exitRequestFailed
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()

	switch command {
	case "get":
		return runGet(ctx, client, opts, stdout, stderr)
	case "delete":
		return runDelete(ctx, client, opts, stdout, stderr)
	default:
		return runApply(ctx, client, opts, stdout, stderr)
	}
}

func runGet(ctx context.Context, client *k8sailor.Client, opts *lifecycleOptions, stdout, stderr io.Writer) int {
	services, err := client.ListServices(ctx, &k8sailorv1.ListServicesRequest{
		Namespace: opts.namespace, Deployment: opts.deployment,
	})
	if err != nil {
		return requestFailed(stderr, err)
	}
	if opts.json {
		for _, service := range services {
			if !printJSON(stdout, stderr, service) {
				return exitRequestFailed
			}
		}
		return exitOK
	}
	if len(services) == 0 {
		fmt.Fprintf(stderr, "no Services of Deployment %q\n", opts.deployment)
		return exitOK
	}
	rows := [][]string{{"NAME", "TYPE", "CLUSTER-IP", "PORTS", "RULE"}}
	for _, s := range services {
		ports := make([]string, len(s.GetPorts()))
		for i, p := range s.GetPorts() {
			ports[i] = k8sailor.FormatPort(p)
		}
		kind := strings.TrimPrefix(s.GetType().String(), "SERVICE_TYPE_")
		rows = append(rows, []string{s.GetName(), kind, orDash(s.GetClusterIp()), orDash(strings.Join(ports, ",")), s.GetRule()})
	}
	for _, line := range table(rows) {
		fmt.Fprintln(stdout, line)
	}
	return exitOK
}

// table lines up columns as wide as their widest cell; the last column is not padded.
func table(rows [][]string) []string {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	lines := make([]string, len(rows))
	for r, row := range rows {
		cells := make([]string, len(row))
		for i, cell := range row {
			if i < len(row)-1 {
				cell = fmt.Sprintf("%-*s", widths[i], cell)
			}
			cells[i] = cell
		}
		lines[r] = strings.TrimRight(strings.Join(cells, "  "), " ")
	}
	return lines
}

// outcomeWord is an outcome as the human-readable output shows it: "not found".
func outcomeWord(o k8sailorv1.Outcome) string {
	return strings.ReplaceAll(strings.ToLower(k8sailor.OutcomeName(o)), "_", " ")
}

func runDelete(ctx context.Context, client *k8sailor.Client, opts *lifecycleOptions, stdout, stderr io.Writer) int {
	req := &k8sailorv1.DeleteServicesRequest{
		Namespace: opts.namespace, Deployment: opts.deployment, Names: opts.names,
		All: opts.all, DryRun: opts.dryRun,
	}
	failed := false
	for res, err := range client.DeleteServices(ctx, req) {
		if err != nil {
			return requestFailed(stderr, err)
		}
		failed = failed || !k8sailor.Done(res.GetOutcome())
		if opts.json {
			if !printJSON(stdout, stderr, res) {
				return exitRequestFailed
			}
			continue
		}
		word := outcomeWord(res.GetOutcome())
		if opts.dryRun && res.GetOutcome() == k8sailorv1.Outcome_OUTCOME_DELETED {
			word += " (dry run)"
		}
		line := fmt.Sprintf("%-18s %s", word, res.GetServiceName())
		if res.GetError() != "" {
			line += "  " + res.GetError()
		}
		fmt.Fprintln(stdout, line)
	}
	if failed {
		return exitRuleFailed
	}
	return exitOK
}

func runApply(ctx context.Context, client *k8sailor.Client, opts *lifecycleOptions, stdout, stderr io.Writer) int {
	req := &k8sailorv1.ApplyServicesRequest{
		Namespace: opts.namespace, Deployment: opts.deployment, Rules: opts.rules,
		Prune: opts.prune, Force: opts.force, DryRun: opts.dryRun,
	}
	reported := make(map[int32]bool, len(opts.rules))
	failed := false
	for res, err := range client.ApplyServices(ctx, req) {
		if err != nil {
			return requestFailed(stderr, err)
		}
		if res.GetIndex() >= 0 {
			reported[res.GetIndex()] = true
		}
		failed = failed || !k8sailor.Done(res.GetOutcome())
		if opts.json {
			if !printJSON(stdout, stderr, res) {
				return exitRequestFailed
			}
			continue
		}
		for _, line := range formatApplied(res, opts.dryRun) {
			fmt.Fprintln(stdout, line)
		}
	}
	if !allReported(stderr, reported, len(opts.rules)) || failed {
		return exitRuleFailed
	}
	return exitOK
}

// formatApplied is one apply result as the Python CLI prints it: a head line, the error if
// any, and each change as kubectl diff shows it (- old, + new).
func formatApplied(res *k8sailorv1.ApplyServicesResponse, dryRun bool) []string {
	word := outcomeWord(res.GetOutcome())
	if dryRun && k8sailor.Done(res.GetOutcome()) && res.GetOutcome() != k8sailorv1.Outcome_OUTCOME_UNCHANGED {
		word += " (dry run)"
	}
	where := fmt.Sprintf("rule %d", res.GetIndex())
	if res.GetIndex() < 0 {
		where = "pruned"
	}
	lines := []string{fmt.Sprintf("%-20s %s  (%s: %s)", word, orDash(res.GetServiceName()), where, res.GetRule())}
	if res.GetError() != "" {
		lines = append(lines, "  ! "+res.GetError())
	}
	for _, c := range res.GetChanges() {
		if c.GetBefore() != "" {
			lines = append(lines, fmt.Sprintf("  - %s: %s", c.GetPath(), c.GetBefore()))
		}
		if c.GetAfter() != "" {
			lines = append(lines, fmt.Sprintf("  + %s: %s", c.GetPath(), c.GetAfter()))
		}
	}
	return lines
}
