// Command k8sailor-go creates Kubernetes Services in front of a Deployment through a
// k8sailor server, the Go twin of the Python `k8sailor expose`.
//
//	k8sailor-go [expose] [flags] DEPLOYMENT RULE... [--spec JSON]...
//	k8sailor-go [expose] --deployment NAME [flags] [RULE...] [--spec JSON]...
//	k8sailor-go get|delete|apply ...  (see lifecycle.go)
//
// Rules are compact text ("80:8088", "#80:80", "!31234:80:8088", "@db.example.com") or,
// with --spec, a k8sailor.v1.ServiceSpec in protobuf JSON. They are numbered from 0 in the
// order they appear on the command line, and flags may come before, between or after them.
//
// It prints one line per rule as the server reports it (with --json, the
// CreateServicesResponse as protobuf JSON). Exit status: 0 when every rule was created or
// was already there, 1 when any rule was not, 2 when the request as a whole failed (the
// gRPC status code and message go to stderr) or the command line is wrong.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/k8sailor/k8sailor/client/go/k8sailor"
	k8sailorv1 "github.com/k8sailor/k8sailor/client/go/k8sailor/v1"
)

const (
	exitOK            = 0
	exitRuleFailed    = 1
	exitRequestFailed = 2 // also for a wrong command line, as the flag package does
)

const usage = `usage: k8sailor-go [expose] [flags] DEPLOYMENT RULE... [--spec JSON]...
       k8sailor-go [expose] --deployment NAME [flags] [RULE...] [--spec JSON]...
       k8sailor-go get|delete|apply ... (k8sailor-go get -h)

Creates one Service per rule in front of a Deployment through a k8sailor server and
prints each result as it arrives. Rules: 80:8088, #80:80 (headless), !31234:80:8088
(NodePort), ^80:8080 (LoadBalancer), @db.example.com (ExternalName), name=RULE.
A --spec is a k8sailor.v1.ServiceSpec in protobuf JSON, for example
  --spec '{"name":"resolver","type":"SERVICE_TYPE_CLUSTER_IP",
           "ports":[{"port":53,"targetPortName":"dns","protocol":"PROTOCOL_UDP"}]}'

TLS: --ca-file verifies the server; --cert-file and --key-file add a client
certificate (mutual TLS); --token-file sends a bearer token, read for every call.

Exit status: 0 all rules created or unchanged, 1 some rule was not,
2 the request failed (gRPC status on stderr) or the command line is wrong.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	exitCode := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode)
}

// options is a parsed command line.
type options struct {
	commonFlags
	deployment string
	dryRun     bool
	rules      []*k8sailorv1.Rule
}

// ruleList collects rules in command-line order: --spec values and positional arguments
// both append to it, so indices follow what the user typed.
type ruleList struct {
	rules           []*k8sailorv1.Rule
	firstPositional int // index of the first positional argument in rules, or -1
}

func (l *ruleList) addPositional(text string) {
	if l.firstPositional < 0 {
		l.firstPositional = len(l.rules)
	}
	l.rules = append(l.rules, k8sailor.Raw(text))
}

// specFlag is the repeatable --spec flag.
type specFlag struct{ list *ruleList }

func (f specFlag) String() string { return "" }

func (f specFlag) Set(value string) error {
	spec := &k8sailorv1.ServiceSpec{}
	if err := protojson.Unmarshal([]byte(value), spec); err != nil {
		return fmt.Errorf("not a k8sailor.v1.ServiceSpec: %w", err)
	}
	f.list.rules = append(f.list.rules, k8sailor.Spec(spec))
	return nil
}

// durationFlag takes a Go duration ("30s", "1m30s") or a plain number of seconds ("2.5").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durationFlag) Set(value string) error {
	d, err := time.ParseDuration(value)
	if err != nil {
		seconds, ferr := strconv.ParseFloat(value, 64)
		if ferr != nil {
			return errors.New(`want a duration such as "30s" or a number of seconds`)
		}
		d = time.Duration(seconds * float64(time.Second))
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	*f.d = d
	return nil
}

// flagError is a command-line error that the flag package has already reported.
type flagError struct{ err error }

func (e flagError) Error() string { return e.err.Error() }
func (e flagError) Unwrap() error { return e.err }

// parseArgs parses the command line. Unlike a bare flag.FlagSet it lets flags follow
// positional arguments, because that is how people write `k8sailor-go web 80 --dry-run`.
// Rules never start with "-", and "--" ends the flags for anything that does.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	opts := &options{}
	list := &ruleList{firstPositional: -1}

	fs := flag.NewFlagSet("k8sailor-go", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	opts.register(fs)
	fs.StringVar(&opts.deployment, "deployment", "", "`name` of the Deployment (default: the first positional argument)")
	fs.BoolVar(&opts.dryRun, "dry-run", false, "validate every Service on the API server, create nothing")
	fs.Var(specFlag{list}, "spec", "a structured rule: k8sailor.v1.ServiceSpec as protobuf `JSON` (repeatable)")

	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError{err} // the flag package has printed it, with the usage
		}
		rest := fs.Args()
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			for _, text := range rest {
				list.addPositional(text)
			}
			break
		}
		if len(rest) == 0 {
			break
		}
		list.addPositional(rest[0])
		args = rest[1:]
	}

	if opts.deployment == "" {
		if list.firstPositional < 0 {
			return nil, errors.New("no deployment: name it as the first argument or with --deployment")
		}
		i := list.firstPositional
		opts.deployment = list.rules[i].GetRaw()
		list.rules = append(list.rules[:i], list.rules[i+1:]...)
	}
	if len(list.rules) == 0 {
		return nil, errors.New("no rules: give at least one RULE or --spec")
	}
	opts.rules = list.rules
	return opts, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// Every line printed goes through escaping: tables, errors and JSON alike.
	stdout, stderr = escaping(stdout), escaping(stderr)
	// A Deployment named like a subcommand is exposed with "expose NAME" or --deployment.
	if len(args) > 0 {
		switch args[0] {
		case "get", "delete", "apply":
			return runLifecycle(ctx, args[0], args[1:], stdout, stderr)
		case "expose":
			args = args[1:]
		}
	}
	opts, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.As(err, new(flagError)) {
		return exitRequestFailed
	}
	if err != nil {
		fmt.Fprintf(stderr, "k8sailor-go: %v (see k8sailor-go -h)\n", err)
		return exitRequestFailed
	}

	client, ok := opts.dial(stderr)
	if !ok {
		return exitRequestFailed
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	req := &k8sailorv1.CreateServicesRequest{
		Namespace:  opts.namespace,
		Deployment: opts.deployment,
		Rules:      opts.rules,
		DryRun:     opts.dryRun,
	}

	reported := make(map[int32]bool, len(opts.rules))
	failed := false
	for res, err := range client.CreateServices(ctx, req) {
		if err != nil {
			return requestFailed(stderr, err)
		}
		// The header waits for the first row, so a failed request prints nothing on stdout.
		if !opts.json && len(reported) == 0 {
			fmt.Fprintln(stdout, formatHeader())
		}
		reported[res.GetIndex()] = true
		failed = failed || !k8sailor.OK(res)
		line, err := formatResult(res, opts.json)
		if err != nil {
			fmt.Fprintf(stderr, "k8sailor-go: %v\n", err)
			return exitRequestFailed
		}
		fmt.Fprintln(stdout, line)
	}
	if !allReported(stderr, reported, len(opts.rules)) || failed {
		return exitRuleFailed
	}
	return exitOK
}

// The columns of the table, as wide as the Python CLI's so that both look alike.
var columns = []struct {
	name  string
	width int
}{{"INDEX", 5}, {"OUTCOME", 9}, {"SERVICE", 24}, {"CLUSTER-IP", 15}, {"PORTS", 28}}

func row(cells ...string) string {
	padded := make([]string, len(cells))
	for i, cell := range cells {
		if i < len(columns) {
			cell = fmt.Sprintf("%-*s", columns[i].width, cell)
		}
		padded[i] = cell
	}
	return strings.TrimRight(strings.Join(padded, "  "), " ")
}

func formatHeader() string {
	return row("INDEX", "OUTCOME", "SERVICE", "CLUSTER-IP", "PORTS", "ERROR")
}

var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

func formatResult(res *k8sailorv1.CreateServicesResponse, asJSON bool) (string, error) {
	if asJSON {
		b, err := jsonOptions.Marshal(res)
		return string(b), err
	}
	ports := make([]string, len(res.GetPorts()))
	for i, p := range res.GetPorts() {
		ports[i] = k8sailor.FormatPort(p)
	}
	return row(
		strconv.Itoa(int(res.GetIndex())),
		k8sailor.OutcomeName(res.GetOutcome()),
		orDash(res.GetServiceName()),
		orDash(res.GetClusterIp()),
		orDash(strings.Join(ports, ",")),
		res.GetError(),
	), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
