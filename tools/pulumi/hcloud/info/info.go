// Package info maps the Hetzner Cloud Terraform provider to Pulumi's "hcloud" package.
//
// The mapping follows the bridge's standard rules, which is what the published
// pulumi-hcloud SDKs were generated with: every hcloud_<name> resource becomes
// hcloud:index/<camelName>:<PascalName>, every data source hcloud:index/get<Name>:get<Name>,
// and string "name" inputs are auto-named. scripts/pulumi-engine.sh checks the generated
// schema against the tokens of the pinned Python SDK.
package info

import (
	"context"
	"fmt"
	"strconv"

	"github.com/hetznercloud/terraform-provider-hcloud/hcloud"
	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shim "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"rgrid.local/tools/pulumi/hcloud/version"
)

// Provider returns the bridge's description of the plugin. metadata is the content of
// bridge-metadata.json as written by pulumi-tfgen-hcloud (nil when generating it).
func Provider(metadata []byte) tfbridge.ProviderInfo {
	ctx := context.Background()
	prov := tfbridge.ProviderInfo{
		P:            pfbridge.MuxShimWithPF(ctx, shimv2.NewProvider(hcloud.Provider()), hcloud.NewPluginProvider()),
		Name:         "hcloud",
		Version:      version.Version,
		DisplayName:  "Hetzner Cloud",
		Publisher:    "Pulumi",
		Description:  "A Pulumi package for creating and managing hcloud cloud resources.",
		License:      "Apache-2.0",
		GitHubOrg:    "hetznercloud",
		MetadataInfo: tfbridge.NewProviderMetadata(metadata),
	}
	prov.MustComputeTokens(tokens.SingleModule("hcloud_", "index", tokens.MakeStandard("hcloud")))
	prov.SetAutonaming(255, "-")

	// Some plugin-framework resources (Storage Boxes, Zones) have an integer "id"; Pulumi IDs
	// are strings, so give those resources an ID computed from it.
	prov.P.ResourcesMap().Range(func(name string, r shim.Resource) bool {
		if id, ok := r.Schema().GetOk("id"); ok && id.Type() == shim.TypeInt {
			if ri := prov.Resources[name]; ri != nil && ri.ComputeID == nil {
				ri.ComputeID = intID
			}
		}
		return true
	})
	return prov
}

// intID renders a resource's integer "id" attribute as its Pulumi ID.
func intID(_ context.Context, state resource.PropertyMap) (resource.ID, error) {
	v, ok := state["id"]
	if !ok || !v.IsNumber() {
		return "", fmt.Errorf("resource state has no numeric \"id\"")
	}
	return resource.ID(strconv.FormatInt(int64(v.NumberValue()), 10)), nil
}
