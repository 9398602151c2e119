//go:build tools

// Package tools only records the command this module builds, so that `go mod tidy`
// keeps its dependencies. It is never compiled (see the build tag).
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
