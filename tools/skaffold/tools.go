//go:build tools

// Package tools pins the upstream command this module builds: skaffold, for the real node's
// dev loop (skaffold run/dev -p node).
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold"
