# Builds and installs libmtasts for C programs:
#
#   make                         cargo build --release -p mtasts
#   sudo make install            libmtasts.so.$(VERSION) (+ .so.$(MAJOR), .so links), libmtasts.a,
#                                include/mtasts.h, lib/pkgconfig/mtasts.pc under $(PREFIX)
#   make install DESTDIR=/tmp/stage PREFIX=/usr     staged install, for packaging
#   sudo make uninstall          removes exactly what install put there
#   make check-install           installs into a temporary DESTDIR and builds examples/c/deliver.c
#                                against it with pkg-config; checks the SONAME
#   make wheel                   the Python wheel with libmtasts.so inside, in $(WHEEL_DIR)
#                                (bindings/python/build-wheel.sh)
#   make deb                     the Debian package $(DEB_DIR)/mtasts_$(VERSION)_ARCH.deb
#                                (packaging/debian/build-deb.sh; DEB_MAINTAINER=... to set the
#                                Maintainer field)
#
# `install` does not run cargo when the release build exists, so `make && sudo make install`
# does not build as root.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

CARGO ?= cargo
CC ?= cc
INSTALL ?= install
PKG_CONFIG ?= pkg-config
READELF ?= readelf

# The [package] version of Cargo.toml, and its major part (the SONAME is libmtasts.so.$(MAJOR),
# set by build.rs).
VERSION := $(shell awk -F'"' '/^\[/ { section = $$0 } section == "[package]" && /^version[ \t]*=/ { print $$2; exit }' Cargo.toml)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
ifeq ($(VERSION),)
$(error cannot read the package version from Cargo.toml)
endif

TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
SO := $(RELEASE_DIR)/libmtasts.so
STATIC := $(RELEASE_DIR)/libmtasts.a
BIN := $(RELEASE_DIR)/mtasts
DEB_DIR ?= $(TARGET_DIR)/debian
WHEEL_DIR ?= $(TARGET_DIR)/wheels

.PHONY: all install uninstall check-install deb wheel

all:
	$(CARGO) build --release -p mtasts

# Only when missing: see the note at the top. (`&:`: one cargo run makes both; GNU make >= 4.3.)
$(SO) $(STATIC) $(BIN) &:
	$(CARGO) build --release -p mtasts

# The Debian package, from the release build (see packaging/debian/README.md).
deb: $(SO) $(STATIC) $(BIN)
	bash packaging/debian/build-deb.sh '$(VERSION)' '$(TARGET_DIR)' '$(DEB_DIR)'

# The Python wheel, carrying the release library (see bindings/python/README.md).
wheel: $(SO)
	bash bindings/python/build-wheel.sh '$(SO)' '$(WHEEL_DIR)'

install: $(SO) $(STATIC) include/mtasts.h mtasts.pc.in
	$(INSTALL) -d '$(DESTDIR)$(LIBDIR)' '$(DESTDIR)$(INCLUDEDIR)' '$(DESTDIR)$(PKGCONFIGDIR)'
	$(INSTALL) -m 0755 '$(SO)' '$(DESTDIR)$(LIBDIR)/libmtasts.so.$(VERSION)'
	ln -sf 'libmtasts.so.$(VERSION)' '$(DESTDIR)$(LIBDIR)/libmtasts.so.$(MAJOR)'
	ln -sf 'libmtasts.so.$(MAJOR)' '$(DESTDIR)$(LIBDIR)/libmtasts.so'
	$(INSTALL) -m 0644 '$(STATIC)' '$(DESTDIR)$(LIBDIR)/libmtasts.a'
	$(INSTALL) -m 0644 include/mtasts.h '$(DESTDIR)$(INCLUDEDIR)/mtasts.h'
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    mtasts.pc.in > '$(DESTDIR)$(PKGCONFIGDIR)/mtasts.pc'
	chmod 0644 '$(DESTDIR)$(PKGCONFIGDIR)/mtasts.pc'
	@if [ -z '$(DESTDIR)' ] && command -v ldconfig >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    ldconfig; fi

uninstall:
	rm -f '$(DESTDIR)$(LIBDIR)/libmtasts.so.$(VERSION)' '$(DESTDIR)$(LIBDIR)/libmtasts.so.$(MAJOR)' \
	      '$(DESTDIR)$(LIBDIR)/libmtasts.so' '$(DESTDIR)$(LIBDIR)/libmtasts.a' \
	      '$(DESTDIR)$(INCLUDEDIR)/mtasts.h' '$(DESTDIR)$(PKGCONFIGDIR)/mtasts.pc'

# Installs into a temporary DESTDIR (PREFIX=/usr/local), then, as a user of the installed files
# would: compiles examples/c/deliver.c with `pkg-config --cflags --libs mtasts` (shared) and
# `--static` (static), checks that the SONAME is libmtasts.so.$(MAJOR) and that the program
# records it, runs the program against the staged library, and uninstalls again.
# PKG_CONFIG_SYSROOT_DIR makes pkg-config prefix the staged paths with the DESTDIR.
check-install: $(SO) $(STATIC)
	@set -eu; \
	stage=$$(mktemp -d "$${TMPDIR:-/tmp}/mtasts-install.XXXXXX"); \
	trap 'rm -rf "$$stage"' EXIT; \
	echo "== make install DESTDIR=$$stage PREFIX=/usr/local"; \
	$(MAKE) --no-print-directory install DESTDIR="$$stage" PREFIX=/usr/local; \
	(cd "$$stage" && find . \( -type f -o -type l \) | sort); \
	lib="$$stage/usr/local/lib"; \
	export PKG_CONFIG_PATH="$$lib/pkgconfig" PKG_CONFIG_LIBDIR="$$lib/pkgconfig" \
	       PKG_CONFIG_SYSROOT_DIR="$$stage"; \
	echo "== pkg-config mtasts: version $$($(PKG_CONFIG) --modversion mtasts)"; \
	test "$$($(PKG_CONFIG) --modversion mtasts)" = '$(VERSION)'; \
	flags="$$($(PKG_CONFIG) --cflags --libs mtasts)"; \
	echo "== cc deliver.c $$flags"; \
	$(CC) -std=c99 -Wall -Wextra -Werror -o "$$stage/deliver" examples/c/deliver.c $$flags; \
	static="$$($(PKG_CONFIG) --static --cflags --libs mtasts)"; \
	echo "== cc -static-libmtasts deliver.c (pkg-config --static: $$static)"; \
	$(CC) -std=c99 -Wall -Wextra -Werror -o "$$stage/deliver-static" examples/c/deliver.c \
	    $$($(PKG_CONFIG) --cflags mtasts) "$$lib/libmtasts.a" \
	    $$(echo "$$static" | sed 's/-lmtasts//'); \
	echo "== readelf -d libmtasts.so.$(VERSION)"; \
	$(READELF) -d "$$lib/libmtasts.so.$(VERSION)" | grep -E 'SONAME'; \
	soname=$$($(READELF) -d "$$lib/libmtasts.so.$(VERSION)" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p'); \
	if [ "$$soname" != 'libmtasts.so.$(MAJOR)' ]; then \
	    echo "SONAME is '$$soname', expected libmtasts.so.$(MAJOR)"; exit 1; fi; \
	echo "== readelf -d deliver (NEEDED)"; \
	$(READELF) -d "$$stage/deliver" | grep -E 'NEEDED.*mtasts'; \
	$(READELF) -d "$$stage/deliver" | grep -q 'NEEDED.*\[libmtasts.so.$(MAJOR)\]'; \
	if $(READELF) -d "$$stage/deliver-static" | grep -q 'NEEDED.*mtasts'; then \
	    echo "deliver-static needs libmtasts.so"; exit 1; fi; \
	echo "== run deliver against the staged library (usage message expected)"; \
	rc=0; LD_LIBRARY_PATH="$$lib" "$$stage/deliver" || rc=$$?; \
	test "$$rc" = 64; \
	rc=0; "$$stage/deliver-static" || rc=$$?; \
	test "$$rc" = 64; \
	echo "== make uninstall DESTDIR=$$stage PREFIX=/usr/local"; \
	$(MAKE) --no-print-directory uninstall DESTDIR="$$stage" PREFIX=/usr/local; \
	left=$$(find "$$stage/usr" \( -type f -o -type l \)); \
	if [ -n "$$left" ]; then echo "left after uninstall: $$left"; exit 1; fi; \
	echo "check-install: OK"
