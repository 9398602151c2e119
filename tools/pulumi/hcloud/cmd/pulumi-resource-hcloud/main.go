// Command pulumi-resource-hcloud is the hcloud resource plugin. schema-embed.json and
// bridge-metadata.json are generated at build time (see scripts/pulumi-engine.sh) and
// are not committed.
package main

import (
	"context"
	_ "embed"

	pfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"rgrid.local/tools/pulumi/hcloud/info"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed bridge-metadata.json
var bridgeMetadata []byte

func main() {
	pfbridge.MainWithMuxer(context.Background(), "hcloud", info.Provider(bridgeMetadata), pulumiSchema)
}
