// Package version holds the plugin's version, stamped at link time with
// -X rgrid.local/tools/pulumi/hcloud/version.Version=1.NN.N (semver, no leading "v":
// the bridge refuses anything else).
package version

// Version is set by the linker; see scripts/pulumi-engine.sh.
var Version string
