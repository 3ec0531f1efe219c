package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
)

// A figure measured while tollgate throttled or blocked the org it serves is
// the throttle's, not tollgate's. Every tollgate run is therefore followed by
// a look at the billing decisions on /metrics: any org not allowed fails the
// row and the whole run (exit status 1, after the results are written).

// billingOrgsMetric counts orgs by enforcement decision (billing package).
const billingOrgsMetric = "tollgate_billing_orgs"

// orgCheckTimeout bounds one /metrics scrape and org look-up.
const orgCheckTimeout = 10 * time.Second

// withOrgCheck returns run followed by checkOrgs on s; run itself for
// servers that are not tollgate (no admin API) and nil for nil. A failed
// check is the run's error, so that round counts as failed, and is kept for
// the exit status.
func (b *bench) withOrgCheck(s *server, run runner) runner {
	if run == nil || s == nil || s.admin == nil {
		return run
	}
	return func(ctx context.Context, d time.Duration) (runResult, error) {
		r, err := run(ctx, d)
		if err != nil || ctx.Err() != nil {
			return r, err
		}
		if err := b.checkOrgs(ctx, s); err != nil {
			return r, err
		}
		return r, nil
	}
}

// checkOrgs fails when s throttles or blocks any org, or when s is the
// pages tollgate and the pages owner's traffic went to its synthetic org
// instead of the bench org (claimPagesOwner). The failure is logged at once
// and remembered for the exit status.
func (b *bench) checkOrgs(ctx context.Context, s *server) error {
	ctx, cancel := context.WithTimeout(ctx, orgCheckTimeout)
	defer cancel()
	err := s.admin.notAllowed(ctx)
	if err == nil && s.Name == srvPages {
		err = s.admin.ownerClaimed(ctx, pagesOwner)
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", s.Name, err)
		b.orgFailures = append(b.orgFailures, err.Error())
		b.logf("FAIL %v", err)
	}
	return err
}

// notAllowed reads tollgate_billing_orgs from /metrics and fails with every
// decision other than allow that counts an org.
func (a *tollgateAdmin) notAllowed(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return fmt.Errorf("org check: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("org check: GET /metrics: status %d", resp.StatusCode)
	}
	counts, err := parseDecisions(bufio.NewScanner(resp.Body))
	if err != nil {
		return fmt.Errorf("org check: %w", err)
	}
	return decisionsProblem(counts)
}

// parseDecisions collects the tollgate_billing_orgs samples of a Prometheus
// text exposition by their decision label.
func parseDecisions(sc *bufio.Scanner) (map[string]float64, error) {
	counts := map[string]float64{}
	prefix := billingOrgsMetric + `{decision="`
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		decision, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("unreadable %s sample %q", billingOrgsMetric, line)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("unreadable %s sample %q: %w", billingOrgsMetric, line, err)
		}
		counts[decision] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if _, ok := counts["allow"]; !ok {
		return nil, fmt.Errorf("no %s samples on /metrics", billingOrgsMetric)
	}
	return counts, nil
}

// decisionsProblem names the decisions other than allow that count orgs.
func decisionsProblem(counts map[string]float64) error {
	var bad []string
	for d, n := range counts {
		if d != "allow" && n > 0 {
			bad = append(bad, fmt.Sprintf("%s=%g", d, n))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("orgs not allowed (%s %s): the figures measure enforcement, not serving", billingOrgsMetric, strings.Join(bad, ", "))
}

// ownerClaimed fails when owner's synthetic org exists: tollgate creates it
// for pages no org claimed, which then run on the default plan.
func (a *tollgateAdmin) ownerClaimed(ctx context.Context, owner string) error {
	id := sites.SyntheticOrgID(owner)
	_, err := a.client.Org(ctx, id)
	var p *admin.Problem
	switch {
	case errors.As(err, &p) && p.Status == http.StatusNotFound:
		return nil
	case err != nil:
		return fmt.Errorf("org check: %w", err)
	}
	return fmt.Errorf("org %s exists: %s's pages are billed to it, not to org %s", id, owner, benchOrg)
}

// claimPagesOwner makes the bench org (plan big, no limits) pay for the
// pages owner's sites; without it they are billed to the synthetic org
// gitea-{owner} on the default plan, which throttles after its quota.
func (a *tollgateAdmin) claimPagesOwner(ctx context.Context) error {
	owners := []string{pagesOwner}
	if _, err := a.client.UpdateOrg(ctx, benchOrg, sites.OrgPatch{GiteaOwners: &owners}); err != nil {
		return fmt.Errorf("PATCH /v1/orgs/%s gitea_owners [%s]: %w", benchOrg, pagesOwner, err)
	}
	return nil
}
