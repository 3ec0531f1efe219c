package admin

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tollgate-edge/tollgate/sites"
)

// ProblemTypePlanDowngrade: a plan change asked without force would move
// the org down the plan ladder (billing.ErrDowngrade): 409. Send it again
// with "force": true (admin org set --force) to move the org down anyway.
const ProblemTypePlanDowngrade = "urn:tollgate:problem:plan-downgrade"

// PatchOrg changes the fields of the org that in sets; in.Force lets a
// plan change move the org down the plan ladder.
func (c *Client) PatchOrg(ctx context.Context, id string, in OrgUpdate) (sites.Org, error) {
	var out sites.Org
	_, err := c.do(ctx, http.MethodPatch, "/v1/orgs/"+url.PathEscape(id), in, &out)
	return out, err
}
