// Package version is what a tierfs binary knows of its own build: the
// module version, the commit, Go and go-fuse. `tierfs version` prints it
// and the daemon's mounted line carries it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at build time by `make build` (-ldflags -X), for builds whose build
// information lacks the VCS stamp (GOFLAGS=-buildvcs=false, a worktree Go
// cannot read): version is `git describe --always --dirty`, revision the
// commit and modified "true" when the tree had changes.
var (
	version  = ""
	revision = ""
	modified = ""
)

// GoFuseModule is go-fuse's module path, as go.mod names it.
const GoFuseModule = "github.com/hanwen/go-fuse/v2"

// Build is what `tierfs version` prints and the daemon logs.
type Build struct {
	Version  string // the module's version, or the build's stamp, or "(devel)"
	Revision string // the VCS commit, "" when unknown
	Modified bool   // the tree had uncommitted changes
	Go       string // runtime.Version()
	Platform string // GOOS/GOARCH
	GoFuse   string // go-fuse's module version
}

// Read is this binary's build.
func Read() Build {
	v := Build{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
		for _, d := range bi.Deps {
			if d.Path == GoFuseModule {
				v.GoFuse = d.Version
				if d.Replace != nil {
					v.GoFuse += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
	}
	// The stamp from the build stands in for what the build information
	// lacks; where both are there they agree.
	if version != "" && v.Version == "(devel)" {
		v.Version = version
	}
	if v.Revision == "" && revision != "" {
		v.Revision, v.Modified = revision, modified == "true"
	}
	return v
}

// Short is one line: "tierfs VERSION (commit REV[+dirty], go1.x, os/arch)".
func (v Build) Short() string {
	var extra []string
	if v.Revision != "" {
		extra = append(extra, "commit "+v.revisionText())
	}
	extra = append(extra, v.Go, v.Platform)
	return fmt.Sprintf("tierfs %s (%s)", v.Version, strings.Join(extra, ", "))
}

// revisionText is the revision, "+dirty" when the tree had changes, or
// "unknown".
func (v Build) revisionText() string {
	if v.Revision == "" {
		return "unknown"
	}
	if v.Modified {
		return v.Revision + "+dirty"
	}
	return v.Revision
}

// String is `tierfs version`'s output.
func (v Build) String() string {
	dirty := "no"
	if v.Modified {
		dirty = "yes"
	}
	if v.Revision == "" {
		dirty = "unknown"
	}
	goFuse := v.GoFuse
	if goFuse == "" {
		goFuse = "unknown"
	}
	rev := v.Revision
	if rev == "" {
		rev = "unknown (built without VCS information: use make build)"
	}
	return fmt.Sprintf("tierfs %s\n  revision: %s\n  modified: %s\n  go:       %s %s\n  go-fuse:  %s\n",
		v.Version, rev, dirty, v.Go, v.Platform, goFuse)
}
