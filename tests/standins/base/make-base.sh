#!/bin/sh
# TEST INFRASTRUCTURE: makes the local Debian 12 base image of the stand-in images.
# Usage: make-base.sh TAG MIRROR SOURCES_FILE LABEL=VALUE...   (run by tests/standins/build.py)
#   TAG           image tag to create, e.g. aim-standin-base:bookworm
#   MIRROR        Debian mirror debootstrap downloads from (the one the host's apt uses)
#   SOURCES_FILE  deb822 apt sources written into the image (same mirrors as the host)
#   LABEL=VALUE   labels set on the image (build.py puts its recipe hash here)
# Needs root, debootstrap and a running Docker engine; no image registry is used.
set -eu

tag=$1 mirror=$2 sources=$3
shift 3

work=$(mktemp -d "${TMPDIR:-/var/tmp}/aim-standin-base.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/rootfs

# An https mirror needs CA certificates inside the image too.
include=
if grep -q 'https://' "$sources"; then
    include=--include=ca-certificates
fi

# shellcheck disable=SC2086 # $include is empty or one word
debootstrap --variant=minbase --components=main $include bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" "$root/debootstrap/debootstrap.log" 2>/dev/null >&2
    exit 1
}

# apt inside `docker build` uses the host's mirrors, never deb.debian.org by accident.
rm -f "$root/etc/apt/sources.list"
cp "$sources" "$root/etc/apt/sources.list.d/debian.sources"
chmod 644 "$root/etc/apt/sources.list.d/debian.sources"

# No service starts inside a build container (a package's postinst would try to).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# Slim like the official debian:bookworm-slim: no docs, man pages or translations, no
# recommends, no package cache left in layers.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
cat >"$root/etc/apt/apt.conf.d/docker-slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
    "$root"/debootstrap
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" -mindepth 1 -delete \
    2>/dev/null || true
: >"$root/etc/machine-id"

# LABEL=VALUE arguments hold no spaces (build.py passes a key and a hex digest).
labels=$*
set -- --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8'
for label in $labels; do
    set -- "$@" --change "LABEL $label"
done
tar --numeric-owner -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
