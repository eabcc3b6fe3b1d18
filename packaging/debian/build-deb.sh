#!/usr/bin/env bash
# Builds the Debian package mtasts_VERSION_ARCH.deb from the release build (`make deb` runs this
# after `cargo build --release -p mtasts`; it never runs cargo itself).
#
#   packaging/debian/build-deb.sh VERSION TARGET_DIR OUT_DIR
#
# Layout: `make install` (PREFIX=/usr, the multiarch library directory) for the library, header
# and mtasts.pc; /usr/bin/mtasts; the units of examples/systemd adapted to the package (/usr/bin,
# User=_mtasts, Group=mtasts, UMask=0002); man pages generated from the clap definition by
# `mtasts manpages`; /etc/mtasts/mtasts.toml (conffile); docs and examples under
# /usr/share/doc/mtasts. Binaries are stripped; the maintainer scripts are in this directory.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 VERSION TARGET_DIR OUT_DIR" >&2
    exit 2
fi
version=$1 target=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

for tool in dpkg-deb dpkg strip gzip md5sum; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing" >&2; exit 1; }
done
release=$target/release
for f in "$release/mtasts" "$release/libmtasts.so" "$release/libmtasts.a"; do
    [[ -f $f ]] || { echo "build-deb: $f is missing: run cargo build --release -p mtasts" >&2; exit 1; }
done

arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || "${CC:-cc}" -print-multiarch)
[[ -n $multiarch ]] || { echo "build-deb: cannot tell the multiarch directory" >&2; exit 1; }
maintainer=${DEB_MAINTAINER:-mtasts packagers <packagers@mtasts.example.org>}
date=${SOURCE_DATE_EPOCH:+@$SOURCE_DATE_EPOCH}
date=$(LC_ALL=C date -R -d "${date:-now}")

work=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/mtasts_${version}_$arch
mkdir -p "$root"

# Library, header, pkg-config file: the Makefile's install, staged.
make --no-print-directory install DESTDIR="$root" PREFIX=/usr LIBDIR="/usr/lib/$multiarch" \
    TARGET_DIR="$target" >/dev/null
install -D -m 0755 "$release/mtasts" "$root/usr/bin/mtasts"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/mtasts" \
    "$root/usr/lib/$multiarch/libmtasts.so.$version"
strip --strip-debug "$root/usr/lib/$multiarch/libmtasts.a"
# Debian policy 8.1: shared libraries are not executable.
chmod 0644 "$root/usr/lib/$multiarch/libmtasts.so.$version"

install -D -m 0644 "$here/mtasts.toml" "$root/etc/mtasts/mtasts.toml"

# systemd units (/lib: Debian 12 keeps units there until the /usr merge is finished).
units=$root/lib/systemd/system
install -d "$units"
for unit in examples/systemd/*.service examples/systemd/*.socket examples/systemd/*.timer; do
    name=$(basename "$unit")
    {
        echo "# Installed by the mtasts Debian package, not enabled: see README.Debian."
        sed -e 's|/usr/local/bin/mtasts|/usr/bin/mtasts|g' \
            -e '/^Group=/d' -e '/^StateDirectory=/d' \
            -e 's|^User=.*|User=_mtasts\nGroup=mtasts\nUMask=0002|' "$unit"
    } >"$units/$name"
    chmod 0644 "$units/$name"
done
if grep -lE '/usr/local|^User=(postfix|Debian-exim)' "$units"/*; then
    echo "build-deb: a unit above still names /usr/local or an MTA's user" >&2
    exit 1
fi

# Man pages, from the same clap definition that parses the command line.
"$release/mtasts" manpages "$work/man" >/dev/null
install -d "$root/usr/share/man/man1"
for page in "$work"/man/*.1; do
    gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done

# Documentation and examples.
doc=$root/usr/share/doc/mtasts
install -d "$doc/examples"
install -m 0644 README.md "$here/README.Debian" "$here/copyright" "$doc/"
install -m 0644 docs/*.md "$doc/"
gzip -9n <CHANGELOG.md >"$doc/changelog.gz"
sed -e "s|@VERSION@|$version|g" -e "s|@MAINTAINER@|$maintainer|g" -e "s|@DATE@|$date|g" \
    "$here/changelog" | gzip -9n >"$doc/changelog.Debian.gz"
for dir in c exim postfix sendmail opensmtpd systemd grafana; do
    cp -r "examples/$dir" "$doc/examples/$dir"
done
find "$doc" -type d -exec chmod 0755 {} +
find "$doc" -type f -exec chmod 0644 {} +

install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/mtasts"

# Control area.
install -d "$root/DEBIAN"
size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$version|g" -e "s|@ARCH@|$arch|g" -e "s|@MAINTAINER@|$maintainer|g" \
    -e "s|@INSTALLED_SIZE@|$size|g" "$here/control.in" >"$root/DEBIAN/control"
if [[ -n ${DEB_HOMEPAGE:-} ]]; then
    echo "Homepage: $DEB_HOMEPAGE" >>"$root/DEBIAN/control"
fi
install -m 0644 "$here/conffiles" "$here/triggers" "$root/DEBIAN/"
# shlibs: packages linking libmtasts.so.0 depend on this version or later (dpkg-shlibdeps).
echo "libmtasts 0 mtasts (>= $version)" >"$root/DEBIAN/shlibs"
chmod 0644 "$root/DEBIAN/shlibs"
install -m 0755 "$here/postinst" "$here/postrm" "$here/prerm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/mtasts_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
