#!/usr/bin/env bash
# Regenerates the Go stubs in client/go/k8sailor/v1/ from proto/k8sailor/v1/*.proto.
#
# Deterministic: the same protoc (the one inside the pinned grpcio-tools of the project's venv)
# and the same pinned plugins give byte-identical files on every run and every machine, so CI
# can regenerate and fail on any difference. The plugins are built from their Go modules at the
# pinned versions into a per-version cache directory the first time, on a fresh machine too.
#
# Environment: PYTHON (default .venv/bin/python at the repository root),
# K8SAILOR_GO_PLUGINS (default ${XDG_CACHE_HOME:-~/.cache}/k8sailor/go-plugins).
set -euo pipefail

# Keep PROTOC_GEN_GO_VERSION equal to google.golang.org/protobuf in client/go/go.mod: the
# generated code checks at init that the runtime is at least as new as the generator.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

fail() { echo "generate.sh: $*" >&2; exit 1; }

module_dir="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$module_dir/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
plugins="${K8SAILOR_GO_PLUGINS:-${XDG_CACHE_HOME:-$HOME/.cache}/k8sailor/go-plugins}"
module_path=github.com/k8sailor/k8sailor/client/go
package_dir=k8sailor/v1

command -v go >/dev/null || fail "the Go toolchain is required (go >= 1.26)"
[ -x "$python" ] || fail "$python not found: run 'make venv' first (protoc comes from grpcio-tools)"
"$python" -c 'import grpc_tools.protoc' 2>/dev/null || fail "grpcio-tools is not installed in $python"

runtime_version="$(cd "$module_dir" && go list -m -f '{{.Version}}' google.golang.org/protobuf)"
[ "$runtime_version" = "$PROTOC_GEN_GO_VERSION" ] ||
    fail "go.mod has google.golang.org/protobuf $runtime_version but protoc-gen-go is pinned at $PROTOC_GEN_GO_VERSION: make them equal"

# install_plugin NAME PACKAGE VERSION: prints the plugin's path, building it once per version.
install_plugin() {
    local name=$1 package=$2 version=$3
    local dir="$plugins/$name-$version"
    if [ ! -x "$dir/$name" ]; then
        echo "generate.sh: installing $name $version into $dir" >&2
        mkdir -p "$plugins"
        local staging
        staging="$(mktemp -d "$plugins/.install.XXXXXX")"
        # Outside any module, so that client/go's go.mod does not choose the plugin's versions.
        (cd "$staging" && GOBIN="$staging/bin" GOFLAGS=-mod=mod GOWORK=off \
            go install -trimpath "$package@$version") >&2 ||
            { rm -rf "$staging"; fail "could not install $package@$version"; }
        # Rename into place in one step: a run that dies half-way leaves no half-installed plugin.
        rm -rf "$dir"
        mv "$staging/bin" "$dir"
        rm -rf "$staging"
    fi
    echo "$dir/$name"
}

protoc_gen_go="$(install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION")"
protoc_gen_go_grpc="$(install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION")"

cd "$repo"
shopt -s nullglob
protos=(proto/k8sailor/v1/*.proto)
[ ${#protos[@]} -gt 0 ] || fail "no .proto files under proto/k8sailor/v1"

# Generate into an empty directory and then replace the package's generated files, so a
# .proto that was removed or renamed leaves no stale .pb.go behind.
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$python" -m grpc_tools.protoc -Iproto \
    --plugin=protoc-gen-go="$protoc_gen_go" \
    --go_out="$out" --go_opt=module="$module_path" \
    --plugin=protoc-gen-go-grpc="$protoc_gen_go_grpc" \
    --go-grpc_out="$out" --go-grpc_opt=module="$module_path" \
    "${protos[@]}"

generated=("$out/$package_dir"/*.pb.go)
[ ${#generated[@]} -gt 0 ] || fail "protoc wrote no Go files into $package_dir"
mkdir -p "$module_dir/$package_dir"
rm -f "$module_dir/$package_dir"/*.pb.go
cp "${generated[@]}" "$module_dir/$package_dir/"
echo "generate.sh: wrote ${#generated[@]} files into client/go/$package_dir" >&2
