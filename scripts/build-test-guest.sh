#!/usr/bin/env bash
# Builds the vTPM test guest once and caches it:
#   bash scripts/build-test-guest.sh [outdir]      (default <repo>/.data/guest)
# Produces <outdir>/vmlinuz (Debian's cloud kernel, TPM tis/crb drivers built in),
# <outdir>/initrd.img (busybox + tpm2-tools + scripts/test-guest/init + the evdev and ACPI
# button modules) and
# <outdir>/manifest.json (versions, input hash, sha256s). Boot it directly
# (<kernel>/<initrd>) with console=ttyS0; what /init prints is described in
# scripts/test-guest/init.
#
# The kernel is taken from the package that linux-image-cloud-amd64 depends on,
# fetched with `apt-get download` and unpacked under <outdir>/cache: nothing is
# installed into /boot. When the outputs already match the inputs (kernel package
# version, the init script, the tool list, this script, busybox and tpm2-tools
# versions), it prints "test guest: up to date" and does nothing else.
#
# Needs: apt, dpkg-deb, busybox-static, tpm2-tools, cpio, zstd.
set -euo pipefail
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
outdir="${1:-$(dirname "$here")/.data/guest}"
init_src="$here/test-guest/init"
tools_src="$here/test-guest/tools.list"
busybox_bin=/bin/busybox
meta=linux-image-cloud-amd64

log() { echo "test guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

for f in "$init_src" "$tools_src"; do [ -r "$f" ] || die "missing $f"; done
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

# One build at a time per outdir.
exec 9>"$outdir/.lock"
flock 9

sha() { sha256sum "$1" | cut -d' ' -f1; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

# The concrete kernel package behind the metapackage, and its version. Debian's
# metapackage pins it ("Depends: linux-image-X-cloud-amd64 (= V)"), so one apt-cache
# call (about half a second where apt keeps no binary cache) answers both.
resolve_kernel() {
  local dep
  kernel_pkg="" kernel_version=""
  dep="$(apt-cache show --no-all-versions "$meta" 2>/dev/null | awk '$1 == "Depends:" { sub(/^Depends: */, ""); print; exit }' |
    tr ',|' '\n\n' | sed 's/^ *//' | grep -E '^linux-image-[^ ]+' | head -n1)" || true
  kernel_pkg="${dep%% *}"
  [ -n "$kernel_pkg" ] || return 1
  case "$dep" in
    *"(= "*) kernel_version="${dep#*(= }"; kernel_version="${kernel_version%)*}" ;;
    *) kernel_version="$(apt-cache show --no-all-versions "$kernel_pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }')" ;;
  esac
  [ -n "$kernel_version" ]
}
updated=""
apt_update_once() {
  [ -z "$updated" ] || return 1
  log "apt-get update (package lists are missing or stale)"
  apt-get update -qq >&2 || die "apt-get update failed"
  updated=1
}
resolve_kernel || { apt_update_once && resolve_kernel; } || die "cannot resolve the package behind $meta"

busybox_version="$(pkg_version busybox-static)"
tpm2_tools_version="$(pkg_version tpm2-tools)"
[ -x "$busybox_bin" ] && [ -n "$busybox_version" ] || die "busybox-static is not installed"
[ -x /usr/bin/tpm2 ] && [ -n "$tpm2_tools_version" ] || die "tpm2-tools is not installed"
command -v cpio >/dev/null || die "cpio is not installed"
command -v zstd >/dev/null || die "zstd is not installed"

inputs="$(printf '%s\n' "kernel=$kernel_pkg=$kernel_version" "busybox=$busybox_version" \
  "tpm2-tools=$tpm2_tools_version" "init=$(sha "$init_src")" "tools=$(sha "$tools_src")" \
  "script=$(sha "${BASH_SOURCE[0]}")" | sha256sum | cut -d' ' -f1)"

manifest="$outdir/manifest.json"
if [ -r "$manifest" ] && [ -r "$outdir/vmlinuz" ] && [ -r "$outdir/initrd.img" ] &&
  grep -q "\"inputs\": \"$inputs\"" "$manifest" &&
  grep -q "\"vmlinuz_sha256\": \"$(sha "$outdir/vmlinuz")\"" "$manifest" &&
  grep -q "\"initrd_sha256\": \"$(sha "$outdir/initrd.img")\"" "$manifest"; then
  echo "test guest: up to date"
  exit 0
fi

work="$(mktemp -d "$outdir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- the kernel -------------------------------------------------------------
cache="$outdir/cache"
mkdir -p "$cache"
deb="$cache/${kernel_pkg}_${kernel_version//:/%3a}_amd64.deb"
if [ ! -s "$deb" ]; then
  # Old kernel packages of ours are no use any more.
  find "$cache" -maxdepth 1 -name 'linux-image-*.deb' -delete
  log "downloading $kernel_pkg $kernel_version"
  # apt runs as _apt where it can; the cache dir may not be writable for it, which is fine.
  download() { (cd "$work" && apt-get download -q "$kernel_pkg=$kernel_version" >&2 2>"$work/apt.err") ; }
  if ! download; then
    cat "$work/apt.err" >&2
    { apt_update_once && resolve_kernel && deb="$cache/${kernel_pkg}_${kernel_version//:/%3a}_amd64.deb" && download; } ||
      die "apt-get download $kernel_pkg failed"
  fi
  fetched="$(find "$work" -maxdepth 1 -name "${kernel_pkg}_*.deb" | head -n1)"
  [ -n "$fetched" ] || die "apt-get download left no .deb"
  mv "$fetched" "$deb"
fi
mkdir -p "$work/kernel"
# The kernel, and the two modules the guest loads to hear the ACPI power button (vtpm.acpi=1).
acpi_modules=(kernel/drivers/input/evdev.ko kernel/drivers/acpi/button.ko)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/kernel" --wildcards './boot/vmlinuz-*' "${acpi_modules[@]/#/./lib/modules/*/}"
vmlinuz="$(find "$work/kernel/boot" -name 'vmlinuz-*' | head -n1)"
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $deb"
kernel_release="${vmlinuz##*/vmlinuz-}"

# --- the initramfs ----------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc,lib/x86_64-linux-gnu,lib64}
chmod 1777 "$root/tmp"

# Copies a file to the same path under the root, following symlinks.
copy_in() {
  local src="$1" dst="$root$1"
  [ -e "$dst" ] && return 0
  mkdir -p "$(dirname "$dst")"
  cp -L "$src" "$dst"
}
# Copies a binary or library with every shared library ldd lists for it (and the loader).
copy_with_libs() {
  local f="$1" lib
  copy_in "$f"
  while read -r lib; do
    [ -n "$lib" ] && copy_in "$lib"
  done < <(ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }')
}
find_lib() {
  local name="$1" d
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib; do
    [ -e "$d/$name" ] && { echo "$d/$name"; return 0; }
  done
  return 1
}

cp "$busybox_bin" "$root/bin/busybox"
for applet in $("$busybox_bin" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done

while read -r line; do
  line="${line%%#*}"
  set -- $line
  [ $# -gt 0 ] || continue
  if [ "$1" = dlopen ]; then
    lib="$(find_lib "$2")" || die "library $2 (from tools.list) not found"
    # Copied under the soname that dlopen asks for.
    copy_with_libs "$lib"
  elif [ -L "$1" ] && [ "$(readlink "$1")" = tpm2 ]; then
    copy_with_libs /usr/bin/tpm2
    ln -sf tpm2 "$root$1"
  else
    [ -x "$1" ] || die "$1 (from tools.list) is not an executable"
    copy_with_libs "$1"
  fi
done < "$tools_src"

mkdir -p "$root/lib/modules"
for module in "${acpi_modules[@]}"; do
  [ -r "$work/kernel/lib/modules/$kernel_release/$module" ] || die "no $module in $deb"
  cp "$work/kernel/lib/modules/$kernel_release/$module" "$root/lib/modules/"
done

install -m 0755 "$init_src" "$root/init"

cpio_list="$work/files"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort) > "$cpio_list"
# Reproducible: the same inputs give the same bytes.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && cpio --quiet --reproducible -o -H newc -R 0:0 < "$cpio_list") | zstd -q -10 > "$work/initrd.img"

# --- publish ----------------------------------------------------------------
install -m 0644 "$vmlinuz" "$work/vmlinuz"
chmod 0644 "$work/initrd.img"
vmlinuz_sha="$(sha "$work/vmlinuz")"
initrd_sha="$(sha "$work/initrd.img")"
cat > "$work/manifest.json" <<EOF
{
  "inputs": "$inputs",
  "kernel_package": "$kernel_pkg",
  "kernel_package_version": "$kernel_version",
  "kernel_release": "$kernel_release",
  "busybox_version": "$busybox_version",
  "tpm2_tools_version": "$tpm2_tools_version",
  "init_sha256": "$(sha "$init_src")",
  "tools_list_sha256": "$(sha "$tools_src")",
  "vmlinuz_sha256": "$vmlinuz_sha",
  "initrd_sha256": "$initrd_sha",
  "initrd_files": $(wc -l < "$cpio_list"),
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
# Manifest last: a build cut short is never taken as up to date.
rm -f "$manifest"
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initrd.img" "$outdir/initrd.img"
mv -f "$work/manifest.json" "$manifest"
log "built $outdir (kernel $kernel_release from $kernel_pkg $kernel_version, initrd $(du -h "$outdir/initrd.img" | cut -f1))"
