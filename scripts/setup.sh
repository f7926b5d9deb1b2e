#!/usr/bin/env bash
# The one way this project installs what it needs. Idempotent: every step first checks whether
# there is anything to do, so a second run finishes in seconds. `npm start` and `npm test` run it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

TEMPORAL_CLI_VERSION=1.5.1
# The cluster's server (the version the CLI's dev server embeds) and UI; scripts/stack/cluster.ts names them too.
TEMPORAL_SERVER_VERSION=1.29.1
TEMPORAL_UI_VERSION=2.42.1
tools_bin="$root/.tools/bin"
started=$(date +%s)
did_something=0

say() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Debian packages the real stack runs on. Barbican and Glance are the production services; the
# others are the hypervisor, the TPM emulator and the tools the test guest and health checks use.
debian_packages=(
  libvirt-daemon-system libvirt-clients libxml2-utils qemu-system-x86 qemu-utils
  swtpm swtpm-tools tpm2-tools
  barbican-api glance-api python3-barbicanclient
  uwsgi-core uwsgi-plugin-python3
  chromium fonts-dejavu-core
  busybox-static cpio zstd xz-utils curl
  postgresql
)

check_node() {
  local v
  v=$(node -p 'process.versions.node') || fail "node is not installed; install Node.js 20.3 or newer"
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=3)?0:1)' \
    || fail "Node $v is too old: the Temporal SDK 1.24 needs Node >= 20.3"
}

install_debian_packages() {
  local missing=() p
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: all ${#debian_packages[@]} present"
    return
  fi
  [ "$(id -u)" -eq 0 ] || fail "Debian packages missing (${missing[*]}) and not root: run 'sudo bash scripts/setup.sh'"
  say "Debian packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || fail "apt-get update failed; check the Debian mirror"
  # Services packaged with these start nothing useful without systemd; the stack manager runs them.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$root/.tools/apt-install.log" 2>&1 \
    || fail "apt-get install failed; see .tools/apt-install.log"
  did_something=1
}

install_npm_packages() {
  local want have stamp=node_modules/.vtpm-setup-stamp
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" = "$have" ] && [ -d node_modules/@temporalio/worker ]; then
    say "npm packages: up to date with package-lock.json"
    return
  fi
  say "npm packages: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
  did_something=1
}

go_bin() { command -v go || echo /usr/local/go/bin/go; }

# A release binary names its version; one built by `go install` says 0.0.0-DEV, so ask Go which
# module version it was built from.
temporal_version_ok() {
  "$1" --version 2>/dev/null | grep -q "temporal version ${TEMPORAL_CLI_VERSION} " && return 0
  "$(go_bin)" version -m "$1" 2>/dev/null | grep -qE "mod\s+github.com/temporalio/cli\s+v${TEMPORAL_CLI_VERSION}\s"
}

install_temporal_cli() {
  if [ -x "$tools_bin/temporal" ] && temporal_version_ok "$tools_bin/temporal"; then
    say "Temporal CLI: $tools_bin/temporal is ${TEMPORAL_CLI_VERSION}"
    return
  fi
  local on_path
  on_path=$(command -v temporal || true)
  if [ -n "$on_path" ] && temporal_version_ok "$on_path"; then
    ln -sf "$on_path" "$tools_bin/temporal"
    say "Temporal CLI: using $on_path (${TEMPORAL_CLI_VERSION})"
    return
  fi
  local go
  go=$(go_bin)
  [ -x "$go" ] || fail "the Temporal CLI is built with Go, which is not installed; install Go 1.22+ or put temporal ${TEMPORAL_CLI_VERSION} on PATH"
  say "Temporal CLI: building ${TEMPORAL_CLI_VERSION} with go install (a few minutes the first time)"
  # Later tags carry a replace directive that `go install` refuses, hence the pin.
  GOBIN="$tools_bin" "$go" install "github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_VERSION}" \
    || fail "go install of the Temporal CLI failed; see the output above"
  temporal_version_ok "$tools_bin/temporal" || fail "the built Temporal CLI does not report version ${TEMPORAL_CLI_VERSION}"
  did_something=1
}

# The Temporal cluster of the local stack and its tests (scripts/stack/cluster.ts): the server and
# its SQL tool at the version the CLI's dev server embeds, and the UI server the CLI embeds. Most of
# their packages are the CLI's, so after the CLI's build they take a minute or two.
go_tool_version_ok() { "$(go_bin)" version -m "$1" 2>/dev/null | grep -qE "^\s+mod\s+$2\s+v$3\s"; }

install_go_tool() { # <name in .tools/bin> <module> <version> <package path>
  local name=$1 module=$2 version=$3 package=$4 go work
  if [ -x "$tools_bin/$name" ] && go_tool_version_ok "$tools_bin/$name" "$module" "$version"; then
    say "$name: $tools_bin/$name is $version"
    return
  fi
  go=$(go_bin)
  [ -x "$go" ] || fail "$name is built with Go, which is not installed; install Go 1.22+"
  say "$name: building $version with go install"
  work=$(mktemp -d)
  GOBIN="$work" "$go" install "$package@v$version" || { rm -rf "$work"; fail "go install of $package@v$version failed; see the output above"; }
  mv "$work/$(basename "$package")" "$tools_bin/$name"
  rm -rf "$work"
  go_tool_version_ok "$tools_bin/$name" "$module" "$version" || fail "the built $name does not report $module $version"
  did_something=1
}

install_temporal_cluster_tools() {
  install_go_tool temporal-server go.temporal.io/server "$TEMPORAL_SERVER_VERSION" go.temporal.io/server/cmd/server
  install_go_tool temporal-sql-tool go.temporal.io/server "$TEMPORAL_SERVER_VERSION" go.temporal.io/server/cmd/tools/sql
  install_go_tool temporal-ui-server github.com/temporalio/ui-server/v2 "$TEMPORAL_UI_VERSION" github.com/temporalio/ui-server/v2/cmd/server
}

# qemu runs guests as libvirt-qemu and the agents' swtpm probes run as tss: both must reach files
# under the project's data folder, so every folder above it must be searchable (not readable).
open_path_to_project() {
  local dir="$root" opened=()
  while [ "$dir" != "/" ]; do
    if [ "$(( 0$(stat -c '%a' "$dir") & 1 ))" -eq 0 ]; then
      chmod o+x "$dir"
      opened+=("$dir")
    fi
    dir=$(dirname "$dir")
  done
  if [ ${#opened[@]} -gt 0 ]; then
    say "made searchable for libvirt-qemu and tss (o+x): ${opened[*]}"
    did_something=1
  fi
}

build_test_guest() {
  # The guest the end-to-end tests boot: Debian's cloud kernel and a busybox initramfs.
  local said
  said=$(bash "$root/scripts/build-test-guest.sh" "$root/.data/guest" 2>&1 | tee /dev/stderr) || fail "building the test guest failed (above)"
  [ "$said" = "test guest: up to date" ] || did_something=1
}

check_host_users() {
  getent passwd tss >/dev/null || fail "user 'tss' is missing; it comes with the swtpm package (reinstall swtpm)"
}

mkdir -p "$tools_bin" "$root/.data"
check_node
install_debian_packages
install_npm_packages
install_temporal_cli
install_temporal_cluster_tools
check_host_users
open_path_to_project
build_test_guest

elapsed=$(( $(date +%s) - started ))
if [ "$did_something" -eq 0 ]; then
  say "nothing to do (${elapsed}s)"
else
  say "done (${elapsed}s)"
fi
