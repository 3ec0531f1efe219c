package admin

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// command is one `tollgate admin` command. setup registers its flags on fs and
// returns the function that runs it with the positional arguments.
type command struct {
	name  string   // "plan put"
	args  []string // names of the positional arguments
	help  string
	setup func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, c *Client, args []string) (output, error)

// findCommand finds the command args start with (one word, such as
// "import", or two, such as "plan put") and returns the arguments after
// its name.
func findCommand(args []string) (*command, []string) {
	for i := range commands {
		name := strings.Fields(commands[i].name)
		if len(args) >= len(name) && slices.Equal(args[:len(name)], name) {
			return &commands[i], args[len(name):]
		}
	}
	return nil, args
}

// isGroup reports whether word starts two-word commands ("plan").
func isGroup(word string) bool {
	for _, c := range commands {
		if first, _, two := strings.Cut(c.name, " "); two && first == word {
			return true
		}
	}
	return false
}

// noFlags is the setup of a command without flags of its own.
func noFlags(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

var commands = []command{
	{name: "import", args: []string{"FILE"}, help: "create or update plans, orgs, sites and domains from an NDJSON file (- reads stdin), in batches; importing the same file again changes nothing", setup: importCmd},
	{name: "export", help: "write every plan, org, site and domain as NDJSON (the format import reads) to stdout or --output", setup: exportCmd},
	{name: "certs list", help: "list the certificates (names, issuer, expiry, last error); `certs` alone does the same", setup: noFlags(certsCmd)},
	{name: "usage org", args: []string{"ORG"}, help: "an org's usage series and totals; --site SITE: one site's; --by-site: each site's totals", setup: usageOrgCmd},
	{name: "usage period", args: []string{"YYYY-MM"}, help: "every org's usage totals for a month", setup: noFlags(usagePeriodCmd)},

	{name: "plan list", help: "list the plans", setup: noFlags(
		func(ctx context.Context, c *Client, _ []string) (output, error) {
			ps, err := c.ListPlans(ctx)
			return planOutput(ps, ps...), err
		})},
	{name: "plan get", args: []string{"NAME"}, help: "show a plan", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			p, err := c.Plan(ctx, args[0])
			return planOutput(p, p), err
		})},
	{name: "plan put", args: []string{"NAME"}, help: "create or replace a plan; a limit left out is 0 (unlimited, or off)", setup: planPut},

	{name: "org list", help: "list the orgs", setup: noFlags(
		func(ctx context.Context, c *Client, _ []string) (output, error) {
			orgs, err := c.ListOrgs(ctx)
			return orgOutput(orgs, orgs...), err
		})},
	{name: "org get", args: []string{"ID"}, help: "show an org and its sites", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			d, err := c.Org(ctx, args[0])
			return orgDetailOutput(d), err
		})},
	{name: "org create", args: []string{"ID"}, help: "create an org", setup: orgCreate},
	{name: "org set", args: []string{"ID"}, help: "change an org's name, plan or state; a move down the plan ladder needs --force", setup: orgSet},
	{name: "org checkout", args: []string{"ID", "PLAN"}, help: "a Stripe Checkout link in which the org subscribes to a higher plan", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			link, err := c.Checkout(ctx, args[0], args[1])
			return output{value: PaymentLink{URL: link}, msg: link}, err
		})},
	{name: "org portal", args: []string{"ID"}, help: "a Stripe customer-portal link for the org", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			link, err := c.Portal(ctx, args[0])
			return output{value: PaymentLink{URL: link}, msg: link}, err
		})},
	{name: "invoice create", args: []string{"ORG"}, help: "bill the org's Stripe customer: --item \"Setup fee:5000\" (repeat), --due 14d to send it (else charged automatically)", setup: invoiceCreateCmd},
	{name: "invoice list", args: []string{"ORG"}, help: "the org's newest Stripe invoices (number, amount, status, hosted and PDF links)", setup: noFlags(invoiceListCmd)},
	{name: "coupon create", args: []string{"CODE"}, help: "a Stripe coupon (--percent-off or --amount-off with --currency, --duration) and its promotion code CODE", setup: couponCreateCmd},
	{name: "coupon list", help: "the newest promotion codes and their coupons", setup: noFlags(couponListCmd)},
	{name: "org events", args: []string{"ID"}, help: "an org's account history (state, plan, Stripe customer changes)", setup: noFlags(orgEventsCmd)},
	{name: "credit grant", args: []string{"ORG", "AMOUNT"}, help: "add prepaid credit to an org (AMOUNT in minor units of [billing] currency)", setup: creditGrantCmd},
	{name: "credit list", args: []string{"ORG"}, help: "an org's prepaid credit: balance and entries", setup: noFlags(creditListCmd)},
	{name: "credit redeem", args: []string{"ORG", "CODE"}, help: "redeem a credit code for an org (once per org)", setup: noFlags(creditRedeemCmd)},
	{name: "credit-code create", args: []string{"CODE", "AMOUNT"}, help: "a code any org may redeem once for AMOUNT of credit (minor units); --max-redemptions, --expires", setup: creditCodeCreateCmd},
	{name: "credit-code list", help: "every credit code and its redemptions", setup: noFlags(creditCodeListCmd)},
	{name: "credit-code disable", args: []string{"CODE"}, help: "withdraw a credit code: refused from now on, its redemptions kept", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			code, err := c.DisableCreditCode(ctx, args[0])
			return creditCodeOutput(code, code), err
		})},
	{name: "org delete", args: []string{"ID"}, help: "delete an org that owns no sites", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			return output{msg: "deleted org " + args[0]}, c.DeleteOrg(ctx, args[0])
		})},

	{name: "site get", args: []string{"ID"}, help: "show a site and its domains", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			d, err := c.Site(ctx, args[0])
			return siteOutput(d, d.Site, nonNil(d.Domains)), err
		})},
	{name: "site create", args: []string{"ORG", "ID"}, help: "create a site served from --dir or --upstream", setup: siteCreate},
	{name: "site set", args: []string{"ID"}, help: "mark a site --active true (kept first when its org is over its plan), false (never served) or unset", setup: siteSet},
	{name: "site delete", args: []string{"ID"}, help: "delete a site and its domains", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			return output{msg: "deleted site " + args[0]}, c.DeleteSite(ctx, args[0])
		})},

	{name: "token create", args: []string{"ORG"}, help: "issue an org token with --scope read,write,billing,admin and --name; its secret is printed once", setup: tokenCreateCmd},
	{name: "token list", args: []string{"ORG"}, help: "list an org's tokens (never their secrets)", setup: noFlags(tokenListCmd)},
	{name: "token revoke", args: []string{"ORG", "ID"}, help: "revoke an org token: it is refused (401) from then on, on every node", setup: noFlags(tokenRevokeCmd)},

	{name: "domain add", args: []string{"SITE", "DOMAIN"}, help: "attach a domain to a site", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			d, err := c.AttachDomain(ctx, args[0], DomainAttach{Domain: args[1]})
			return domainOutput(d), err
		})},
	{name: "domain get", args: []string{"DOMAIN"}, help: "show a domain", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			d, err := c.Domain(ctx, args[0])
			return domainOutput(d), err
		})},
	{name: "domain delete", args: []string{"DOMAIN"}, help: "detach a domain", setup: noFlags(
		func(ctx context.Context, c *Client, args []string) (output, error) {
			return output{msg: "deleted domain " + args[0]}, c.DetachDomain(ctx, args[0])
		})},
}

func planPut(fs *flag.FlagSet) runFunc {
	var p sites.Plan
	var grace time.Duration
	fs.Var(sizeFlag{&p.EgressBytes}, "egress-bytes", "egress allowed per billing period (size; 0 = unlimited)")
	fs.Var(sizeFlag{&p.StorageBytes}, "storage-bytes", "storage allowed over the org's sites (size; 0 = unlimited)")
	fs.IntVar(&p.Sites, "sites", 0, "sites an org may own (0 = unlimited)")
	fs.IntVar(&p.Domains, "domains", 0, "custom domains an org may attach (0 = unlimited)")
	fs.Var(sizeFlag{&p.ThrottleBPS}, "throttle-bps", "bytes per second an org over its egress quota is slowed to (size; 0 = no throttling)")
	fs.IntVar(&p.HardLimitPercent, "hard-limit-percent", 0, "share of the egress quota past which requests are blocked (0 = never, else >= 100)")
	fs.DurationVar(&grace, "grace-period", 0, "how long a past-due org keeps being served, e.g. 72h")
	fs.IntVar(&p.Rank, "rank", 0, "place on the plan ladder: a tenant moves to a higher rank at once, to an equal or lower one at the end of the paid period")
	fs.IntVar(&p.TrialDays, "trial-days", 0, "length of the trial of an org created on (or moved by the operator to) this plan (0 = no trial)")
	fs.BoolVar(&p.Public, "public", false, "list the plan in the public plan catalog (GET /v1/plans without a token)")
	fs.BoolVar(&p.Prepaid, "prepaid", false, "bill the plan's orgs from prepaid credit, hour by hour, with the two prices below")
	fs.Int64Var(&p.OveragePricePerGiB, "overage-price-per-gib", 0, "prepaid: minor units per GiB of egress beyond --egress-bytes in a period")
	fs.Int64Var(&p.StoragePricePerGiBMonth, "storage-price-per-gib-month", 0, "prepaid: minor units per GiB stored beyond --storage-bytes for 30 days")
	var price string
	fs.StringVar(&price, "price", "", "the price the catalog shows: AMOUNT CURRENCY/INTERVAL in minor units, e.g. \"1900 eur/month\"")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		p.Name = args[0]
		p.GracePeriod = sites.Duration(grace)
		if price != "" {
			pr, err := parsePrice(price)
			if err != nil {
				return output{}, usagef("--price: %v", err)
			}
			p.Price = &pr
		}
		out, _, err := c.PutPlan(ctx, p)
		return planOutput(out, out), err
	}
}

// parsePrice reads "1900 eur/month".
func parsePrice(s string) (sites.Price, error) {
	amount, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	currency, interval, ok2 := strings.Cut(strings.TrimSpace(rest), "/")
	n, err := strconv.ParseInt(amount, 10, 64)
	if !ok || !ok2 || err != nil {
		return sites.Price{}, fmt.Errorf("%q is not AMOUNT CURRENCY/INTERVAL, such as \"1900 eur/month\"", s)
	}
	p := sites.Price{Amount: n, Currency: strings.ToLower(currency), Interval: interval}
	return p, p.Validate()
}

func orgCreate(fs *flag.FlagSet) runFunc {
	var in OrgCreate
	fs.StringVar(&in.Name, "name", "", "display name")
	fs.StringVar(&in.Plan, "plan", "free", "plan")
	fs.StringVar(&in.State, "state", "", "state: active (default; trialing with a trial when the plan has trial_days) or any other; an explicit state other than trialing starts no trial")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		in.ID = args[0]
		o, err := c.CreateOrg(ctx, in)
		return orgOutput(o, o), err
	}
}

func orgSet(fs *flag.FlagSet) runFunc {
	var name, plan, state, customer string
	var force bool
	fs.StringVar(&name, "name", "", "new display name")
	fs.StringVar(&plan, "plan", "", "new plan")
	fs.StringVar(&state, "state", "", "new state: trialing, active, past_due, expired or suspended (recorded with you as the actor)")
	fs.StringVar(&customer, "stripe-customer", "", "link a Stripe customer (cus_…); \"\" unlinks")
	fs.BoolVar(&force, "force", false, "let --plan move the org down the plan ladder (a plan of equal or lower rank); refused without it")
	var trialEnds string
	fs.StringVar(&trialEnds, "trial-ends", "", "move the end of a trialing org's trial: an RFC 3339 time, or a duration from now such as 72h")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		var patch sites.OrgPatch
		if trialEnds != "" {
			at, err := timeOrFromNow(trialEnds, time.Now())
			if err != nil {
				return output{}, usagef("--trial-ends: %v", err)
			}
			patch.TrialEndsAt = &at
		}
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "name":
				patch.Name = &name
			case "plan":
				patch.Plan = &plan
			case "state":
				patch.State = &state
			case "stripe-customer":
				patch.StripeCustomer = &customer
			}
		})
		if patch == (sites.OrgPatch{}) {
			return output{}, usagef("nothing to change: pass --name, --plan, --state, --stripe-customer or --trial-ends")
		}
		o, err := c.PatchOrg(ctx, args[0], OrgUpdate{OrgPatch: patch, Force: force})
		return orgOutput(o, o), err
	}
}

// timeOrFromNow reads an RFC 3339 time, or a duration from now.
func timeOrFromNow(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return now.Add(d), nil
}

func siteSet(fs *flag.FlagSet) runFunc {
	var active string
	fs.StringVar(&active, "active", "", "true, false or unset")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		var v *bool
		switch active {
		case "true", "false":
			b := active == "true"
			v = &b
		case "unset":
		default:
			return output{}, usagef("--active must be true, false or unset")
		}
		s, err := c.SetSiteActive(ctx, args[0], v)
		return siteOutput(s, s, nil), err
	}
}

func siteCreate(fs *flag.FlagSet) runFunc {
	var dir, upstream string
	fs.StringVar(&dir, "dir", "", "serve the files of this absolute directory")
	fs.StringVar(&upstream, "upstream", "", "reverse-proxy to this http:// or https:// base URL")
	var hsts sites.HSTS
	var hstsAge time.Duration
	fs.DurationVar(&hstsAge, "hsts-max-age", 0, "send Strict-Transport-Security on HTTPS with this max-age, e.g. 8760h (default: no HSTS)")
	fs.BoolVar(&hsts.IncludeSubdomains, "hsts-include-subdomains", false, "HSTS covers every subdomain too")
	fs.BoolVar(&hsts.Preload, "hsts-preload", false, "HSTS asks for browser preload lists (needs --hsts-include-subdomains and 8760h)")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		var src sites.Source
		switch {
		case dir != "" && upstream != "":
			return output{}, usagef("pass --dir or --upstream, not both")
		case dir != "":
			src = sites.Source{Type: sites.SourceDir, Path: dir}
		case upstream != "":
			src = sites.Source{Type: sites.SourceUpstream, URL: upstream}
		default:
			return output{}, usagef("pass --dir PATH or --upstream URL")
		}
		in := SiteCreate{ID: args[1], Source: src}
		if hstsAge != 0 || hsts.IncludeSubdomains || hsts.Preload {
			hsts.MaxAge = sites.Duration(hstsAge)
			in.HSTS = &hsts
		}
		s, err := c.CreateSite(ctx, args[0], in)
		return siteOutput(s, s, nil), err
	}
}
