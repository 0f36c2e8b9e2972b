#!/usr/bin/env bash
# `buf lint` (STANDARD) and `buf breaking` (FILE) on proto/, with proto/buf.yaml.
#
# buf comes from the npm package @bufbuild/buf at a pinned version, installed once into
# ${XDG_CACHE_HOME:-~/.cache}/k8sailor/buf/<version>/ (override with K8SAILOR_BUF_DIR).
#
# What `buf breaking` compares against: CI runs on a fresh clone of main, where HEAD *is*
# main, so "against main" would compare the tree with itself. Instead the working tree's
# proto/ is compared with proto/ as of HEAD~1, the commit before the newest: that catches a
# breaking change made by the newest commit (and by uncommitted edits, on a developer's
# machine). Set BUF_AGAINST to any buf input to compare with something else, for example
# BUF_AGAINST='.git#ref=<sha of the last released commit>,subdir=proto'. When HEAD has no
# parent, or the parent has no proto/, there is nothing to break and the check is skipped
# with a message; a shallow clone without HEAD~1 is an error rather than a silent skip.
set -euo pipefail

BUF_VERSION=1.75.0

fail() { echo "buf-check: $*" >&2; exit 1; }

repo="$(cd "$(dirname "$0")/../../.." && pwd)"
dir="${K8SAILOR_BUF_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/k8sailor/buf/$BUF_VERSION}"
buf="$dir/node_modules/.bin/buf"

if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    command -v npm >/dev/null || fail "npm is required to install buf (@bufbuild/buf $BUF_VERSION)"
    echo "buf-check: installing @bufbuild/buf@$BUF_VERSION into $dir" >&2
    mkdir -p "$(dirname "$dir")"
    staging="$(mktemp -d "$(dirname "$dir")/.install.XXXXXX")"
    npm install --prefix "$staging" --no-save --no-package-lock --no-audit --no-fund \
        --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2 ||
        { rm -rf "$staging"; fail "npm could not install @bufbuild/buf@$BUF_VERSION"; }
    # Moved into place whole, so an interrupted install never looks finished.
    rm -rf "$dir"
    mv "$staging" "$dir"
fi
version="$("$buf" --version)"
[ "$version" = "$BUF_VERSION" ] || fail "$buf is version $version, not $BUF_VERSION"

cd "$repo/proto"
[ -f buf.yaml ] || fail "proto/buf.yaml is missing"

echo "buf-check: buf $version lint proto/"
"$buf" lint

against="${BUF_AGAINST:-}"
if [ -z "$against" ]; then
    if ! git -C "$repo" rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
        if [ "$(git -C "$repo" rev-parse --is-shallow-repository)" = true ]; then
            fail "shallow clone: HEAD~1 is not here to compare with; fetch one more commit (git fetch --deepen=1) or set BUF_AGAINST"
        fi
        echo "buf-check: skipping buf breaking: HEAD is the first commit, there is no earlier proto/ to break"
        exit 0
    fi
    if ! git -C "$repo" cat-file -e 'HEAD~1:proto' 2>/dev/null; then
        echo "buf-check: skipping buf breaking: HEAD~1 has no proto/, there is no earlier API to break"
        exit 0
    fi
    base="$(git -C "$repo" rev-parse HEAD~1)"
    # The common git directory, so that this works from a linked worktree too.
    git_dir="$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir)"
    against="$git_dir#ref=$base,subdir=proto"
fi

echo "buf-check: buf breaking proto/ against $against"
"$buf" breaking --against "$against"
echo "buf-check: lint and breaking checks passed"
