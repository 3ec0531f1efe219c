// Command tollgate is an edge server for hosting operators: it serves tenant
// sites from directories or reverse-proxies their instances, routed by Host,
// with an operator API beside it.
//
//	tollgate serve --config FILE [--demo DIR]
//	tollgate check-config FILE
//	tollgate admin plan|org|site|domain ...
//	tollgate store migrate --from bbolt:PATH --to redis://...
//	tollgate store backup [--config FILE | --node ADDR] OUT
//	tollgate store restore [--config FILE] [--force] IN | --from-node ADDR
//	tollgate version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/tollgate-edge/tollgate/admin"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  tollgate serve --config FILE [--demo DIR]   run the edge server
  tollgate check-config FILE                  validate a configuration file
  tollgate admin ...                          operator API client (tollgate admin -h)
  tollgate store migrate --from A --to B      copy registry, account history and certificates
                                              between bbolt:PATH and redis://… (verified)
  tollgate store backup [--config F] OUT        consistent copy of the store while it serves
  tollgate store restore [--config F] IN        put a backup (or --from-node ADDR's) into the store
  tollgate version                            print version and commit
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "admin":
		return admin.RunCLI(args[1:], stdout, stderr)
	case "store":
		if len(args) > 1 && args[1] == "backup" {
			return cmdStoreBackup(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "restore" {
			return cmdStoreRestore(args[2:], stdout, stderr)
		}
		return cmdStore(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "tollgate %s %s\n", version, buildCommit())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tollgate: unknown command %q\n%s", args[0], usage)
	return 2
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, "usage: tollgate check-config FILE\n")
		return 2
	}
	if _, err := LoadConfig(args[0]); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[0])
	return 0
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "tollgate.toml", "configuration file (TOML)")
	demo := fs.String("demo", "", "register a demo org, site and domain (demo.localhost) serving this directory, if absent")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	if err := serve(ctx, cfg, *demo, stdout, stderr); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "tollgate: %v\n", err)
		return 1
	}
	return 0
}
