// Command pulumi-tfgen-hcloud writes the plugin's schema.json and bridge-metadata.json
// (`pulumi-tfgen-hcloud schema --skip-docs --skip-examples --out DIR`); the resource
// plugin embeds both.
package main

import (
	pftfgen "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"rgrid.local/tools/pulumi/hcloud/info"
)

func main() {
	pftfgen.MainWithMuxer("hcloud", info.Provider(nil))
}
