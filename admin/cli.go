package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// Exit codes of RunCLI.
const (
	exitOK    = 0
	exitError = 1 // the call failed: the server said no, or could not be reached
	exitUsage = 2 // the command line is wrong
)

// Environment variables the CLI reads its defaults from.
const (
	envAddr  = "TOLLGATE_ADMIN_ADDR"
	envToken = "TOLLGATE_ADMIN_TOKEN"
)

// globals are the flags every command accepts, before or after its name.
type globals struct {
	addr  string
	token string
	json  bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "admin API address, http://host:port or host:port (env "+envAddr+")")
	fs.StringVar(&g.token, "token", g.token, "admin bearer token (env "+envToken+")")
	fs.BoolVar(&g.json, "json", g.json, "print JSON instead of a table")
}

// usageError is a wrong command line: exit 2 with the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// RunCLI runs `tollgate admin ARGS...` (args exclude "admin") against the
// admin API and returns the process exit code: 0 on success, 1 when the call
// failed (the error, "error: <title>: <detail>", goes to stderr), 2 on a
// wrong command line (with the usage).
func RunCLI(args []string, stdout, stderr io.Writer) int {
	g := globals{addr: os.Getenv(envAddr), token: os.Getenv(envToken)}
	if g.addr == "" {
		g.addr = DefaultAddr
	}
	top := flag.NewFlagSet("tollgate admin", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		return usageFail(stderr, err)
	}
	rest := top.Args()
	if len(rest) == 1 && rest[0] == "help" {
		printUsage(stdout)
		return exitOK
	}
	if len(rest) == 1 && rest[0] == "certs" {
		rest = []string{"certs", "list"}
	}
	if len(rest) == 0 {
		return usageFail(stderr, usagef("missing command"))
	}
	cmd, rest := findCommand(rest)
	if cmd == nil && len(rest) == 1 && isGroup(rest[0]) {
		return usageFail(stderr, usagef("missing command after %q", rest[0]))
	}
	if cmd == nil {
		return usageFail(stderr, usagef("unknown command %q", strings.Join(rest[:min(2, len(rest))], " ")))
	}

	fs := flag.NewFlagSet("tollgate admin "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	run := cmd.setup(fs)
	pos, err := parseArgs(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(stdout, cmd, fs)
		return exitOK
	}
	if err == nil && len(pos) != len(cmd.args) {
		err = usagef("%s takes %d argument(s) (%s), got %d", cmd.name, len(cmd.args), strings.Join(cmd.args, " "), len(pos))
	}
	if err == nil && g.token == "" {
		err = usagef("no token: pass --token or set %s", envToken)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		printCommandUsage(stderr, cmd, fs)
		return exitUsage
	}

	out, err := run(withStreams(context.Background(), stdout, stderr), NewClient(g.addr, g.token), pos)
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "error: %v\n", err)
		printCommandUsage(stderr, cmd, fs)
		return exitUsage
	case err != nil:
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitError
	}
	if err := out.print(stdout, g.json); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitError
	}
	if out.failed {
		return exitError
	}
	return exitOK
}

// parseArgs parses flags wherever they appear among the positional arguments
// (the flag package stops at the first positional one). "--" ends the flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // fs.Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	return pos, nil
}

func usageFail(w io.Writer, err error) int {
	fmt.Fprintf(w, "error: %v\n", err)
	printUsage(w)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: tollgate admin [--addr URL] [--token TOKEN] [--json] COMMAND [ARGS] [FLAGS]\n\ncommands:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", strings.TrimSpace(c.name+" "+strings.Join(c.args, " ")), c.help)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nglobal flags, accepted before or after the command:\n"+
		"  --addr URL     admin API address (default $%s, else %s)\n"+
		"  --token TOKEN  bearer token (default $%s)\n"+
		"  --json         print JSON instead of a table\n"+
		"\nSizes are bytes or a number with a unit: 512, 16MiB, 1.5GiB, 500MB.\n"+
		"Run `tollgate admin COMMAND -h` for the flags of a command.\n", envAddr, DefaultAddr, envToken)
}

func printCommandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: tollgate admin %s [flags]\n  %s\n\nflags:\n", strings.TrimSpace(c.name+" "+strings.Join(c.args, " ")), c.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// output is what a command prints: JSON with --json, else a table or a message.
type output struct {
	value  any // the --json form; nil prints nothing
	header []string
	rows   [][]string
	msg    string // without a header: printed alone; "" prints nothing
	// failed makes the command exit 1 after printing (an import with
	// refused records).
	failed bool
}

func (o output) print(w io.Writer, asJSON bool) error {
	if asJSON {
		if o.value == nil {
			return nil
		}
		b, err := json.MarshalIndent(o.value, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	if o.header == nil {
		if o.msg == "" {
			return nil
		}
		_, err := fmt.Fprintln(w, o.msg)
		return err
	}
	if o.msg != "" {
		fmt.Fprintln(w, o.msg)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(o.header, "\t"))
	for _, r := range o.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func planOutput(value any, ps ...sites.Plan) output {
	o := output{value: value, header: []string{"NAME", "EGRESS", "STORAGE", "SITES", "DOMAINS", "THROTTLE", "HARD-LIMIT", "GRACE", "RANK", "TRIAL", "PUBLIC", "PRICE"}}
	for _, p := range ps {
		throttle, hard := "off", "never"
		if p.ThrottleBPS > 0 {
			throttle = formatSize(p.ThrottleBPS) + "/s"
		}
		if p.HardLimitPercent > 0 {
			hard = fmt.Sprintf("%d%%", p.HardLimitPercent)
		}
		price := "-"
		if p.Price != nil {
			price = fmt.Sprintf("%d %s/%s", p.Price.Amount, p.Price.Currency, p.Price.Interval)
		}
		o.rows = append(o.rows, []string{p.Name, limit(p.EgressBytes, formatSize), limit(p.StorageBytes, formatSize),
			limit(p.Sites, itoa), limit(p.Domains, itoa), throttle, hard, time.Duration(p.GracePeriod).String(),
			itoa(p.Rank), fmt.Sprintf("%dd", p.TrialDays), strconv.FormatBool(p.Public), price})
	}
	return o
}

func orgOutput(value any, orgs ...sites.Org) output {
	o := output{value: value, header: []string{"ID", "NAME", "PLAN", "STATE", "CREATED"}}
	for _, org := range orgs {
		o.rows = append(o.rows, []string{org.ID, org.Name, org.Plan, org.State, stamp(org.CreatedAt.Time())})
	}
	return o
}

func orgDetailOutput(d OrgDetail) output {
	trial, pending := "-", "-"
	if !d.TrialEndsAt.IsZero() {
		trial = stamp(d.TrialEndsAt.Time())
	}
	if d.PendingPlan != "" {
		pending = d.PendingPlan + " at " + stamp(d.PendingPlanAt.Time())
	}
	return output{value: d, header: []string{"ID", "NAME", "PLAN", "STATE", "CREATED", "SITES", "TRIAL-ENDS", "PENDING-PLAN"},
		rows: [][]string{{d.ID, d.Name, d.Plan, d.State, stamp(d.CreatedAt.Time()), list(d.Sites), trial, pending}}}
}

func siteOutput(value any, s sites.Site, domains []string) output {
	active := "-"
	if s.Active != nil {
		active = strconv.FormatBool(*s.Active)
	}
	o := output{value: value, header: []string{"ID", "ORG", "SOURCE", "ACTIVE", "CREATED"},
		rows: [][]string{{s.ID, s.Org, source(s.Source), active, stamp(s.CreatedAt.Time())}}}
	if domains != nil {
		o.header = append(o.header, "DOMAINS")
		o.rows[0] = append(o.rows[0], list(domains))
	}
	return o
}

func domainOutput(d sites.Domain) output {
	return output{value: d, header: []string{"DOMAIN", "SITE", "STATUS", "CREATED"},
		rows: [][]string{{d.Name, d.Site, d.Status, stamp(d.CreatedAt.Time())}}}
}

func limit[T int | int64](v T, format func(T) string) string {
	if v == 0 {
		return "unlimited"
	}
	return format(v)
}

func itoa(n int) string { return fmt.Sprint(n) }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func source(s sites.Source) string {
	if s.Type == sites.SourceDir {
		return "dir:" + s.Path
	}
	return s.Type + ":" + s.URL
}
