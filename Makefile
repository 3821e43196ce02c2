# Build and install pkcshsm the way operators and packagers expect:
#
#   make                      build every binary (and libpkcshsm.so) into build/
#   make install              install into $(DESTDIR)$(PREFIX) and the system dirs,
#                             with bash, zsh and fish completion
#   export PATH="$PWD/build:$PATH"   use the built binaries without installing
#   make install DESTDIR=/tmp/stage PREFIX=/usr    staged install for a package
#   make uninstall            remove what install put there
#   make check                the test command (scripts/test.sh)
#   make demo                 the rotation demo (scripts/rotation-demo.sh)
#   make rotation-tests       the runbook scenarios (scripts/rotation-tests/run.sh)
#
# Paths follow the GNU conventions; the systemd, tmpfiles.d and sysusers.d
# directories are those of the system (not under PREFIX) unless overridden.

PREFIX        ?= /usr/local
BINDIR        ?= $(PREFIX)/bin
SBINDIR       ?= $(PREFIX)/sbin
LIBDIR        ?= $(PREFIX)/lib
PKCS11DIR     ?= $(LIBDIR)/pkcs11
DATADIR       ?= $(PREFIX)/share
MANDIR        ?= $(DATADIR)/man
P11KITDIR     ?= $(DATADIR)/p11-kit/modules
SYSTEMDDIR    ?= /usr/lib/systemd/system
TMPFILESDIR   ?= /usr/lib/tmpfiles.d
SYSUSERSDIR   ?= /usr/lib/sysusers.d
SYSCONFDIR    ?= /etc

GO            ?= go
INSTALL       ?= install
BUILD         := build
CMDS          := pkcshsm pkcshsm_mk_change hsmsim p11load
SBIN_CMDS     := pkcshsmd
# The commands whose completion scripts (cobra's) make install installs.
COMPL_CMDS    := pkcshsm pkcshsm_mk_change
BASHCOMPDIR   ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR    ?= $(DATADIR)/zsh/vendor-completions
FISHCOMPDIR   ?= $(DATADIR)/fish/vendor_completions.d
# The PKCS#11 module is built when its main package exists.
MODULE        := $(if $(wildcard cmd/libpkcshsm/*.go),$(BUILD)/libpkcshsm.so)

.PHONY: all build install uninstall check demo rotation-tests clean host-doubles
all: build

build: $(addprefix $(BUILD)/,$(CMDS) $(SBIN_CMDS)) $(MODULE)

# Go decides what is stale; make always asks it.
$(BUILD)/%: FORCE
	@mkdir -p $(BUILD)
	$(GO) build -trimpath -o $@ ./cmd/$*

$(BUILD)/libpkcshsm.so: FORCE
	@mkdir -p $(BUILD)
	$(GO) build -trimpath -buildmode=c-shared -o $@ ./cmd/libpkcshsm
	@rm -f $(BUILD)/libpkcshsm.h

FORCE:

# Test doubles of the IBM host libraries (hsm/hostdouble): never installed,
# not part of `make`. CC=s390x-linux-gnu-gcc builds them for linux/s390x.
HOST_DOUBLES  ?= $(BUILD)/host-doubles
HD_SRC        := hsm/hostdouble/c
HD_CFLAGS     ?= -std=gnu11 -O2 -Wall -Wextra -Wno-unused-parameter -fPIC -shared -fvisibility=hidden

host-doubles:
	@mkdir -p $(HOST_DOUBLES)
	$(CC) $(HD_CFLAGS) -o $(HOST_DOUBLES)/libcsulcca.so $(HD_SRC)/transport.c $(HD_SRC)/csulcca.c -lpthread
	$(CC) $(HD_CFLAGS) -o $(HOST_DOUBLES)/libep11.so $(HD_SRC)/transport.c $(HD_SRC)/ep11.c -lpthread
	for v in 1 2 3 4; do ln -sf libep11.so $(HOST_DOUBLES)/libep11.so.$$v; done

install: build
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	$(INSTALL) -m 0755 $(addprefix $(BUILD)/,$(CMDS)) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 0755 $(addprefix $(BUILD)/,$(SBIN_CMDS)) $(DESTDIR)$(SBINDIR)/
ifneq ($(MODULE),)
	$(INSTALL) -d -m 0755 $(DESTDIR)$(PKCS11DIR) $(DESTDIR)$(P11KITDIR)
	$(INSTALL) -m 0755 $(MODULE) $(DESTDIR)$(PKCS11DIR)/libpkcshsm.so
	printf 'module: %s\ncritical: no\n' '$(PKCS11DIR)/libpkcshsm.so' >$(DESTDIR)$(P11KITDIR)/pkcshsm.module
	chmod 0644 $(DESTDIR)$(P11KITDIR)/pkcshsm.module
endif
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	for c in $(COMPL_CMDS); do \
		$(BUILD)/$$c completion bash >$(DESTDIR)$(BASHCOMPDIR)/$$c && \
		$(BUILD)/$$c completion zsh >$(DESTDIR)$(ZSHCOMPDIR)/_$$c && \
		$(BUILD)/$$c completion fish >$(DESTDIR)$(FISHCOMPDIR)/$$c.fish && \
		chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/$$c $(DESTDIR)$(ZSHCOMPDIR)/_$$c $(DESTDIR)$(FISHCOMPDIR)/$$c.fish || exit 1; \
	done
	for f in man/*.[1-8]; do \
		s=$${f##*.}; \
		$(INSTALL) -d -m 0755 $(DESTDIR)$(MANDIR)/man$$s && \
		$(INSTALL) -m 0644 $$f $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; \
	done
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|/usr/sbin/pkcshsmd|$(SBINDIR)/pkcshsmd|' scripts/pkcshsmd.service >$(DESTDIR)$(SYSTEMDDIR)/pkcshsmd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/pkcshsmd.service
	$(INSTALL) -m 0644 scripts/pkcshsm.tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/pkcshsm.conf
	$(INSTALL) -m 0644 scripts/pkcshsm.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/pkcshsm.conf
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/pkcshsm

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(CMDS)) $(addprefix $(DESTDIR)$(SBINDIR)/,$(SBIN_CMDS))
	rm -f $(DESTDIR)$(PKCS11DIR)/libpkcshsm.so $(DESTDIR)$(P11KITDIR)/pkcshsm.module
	for f in man/*.[1-8]; do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f##*/}; done
	for c in $(COMPL_CMDS); do rm -f $(DESTDIR)$(BASHCOMPDIR)/$$c $(DESTDIR)$(ZSHCOMPDIR)/_$$c $(DESTDIR)$(FISHCOMPDIR)/$$c.fish; done
	rm -f $(DESTDIR)$(SYSTEMDDIR)/pkcshsmd.service $(DESTDIR)$(TMPFILESDIR)/pkcshsm.conf $(DESTDIR)$(SYSUSERSDIR)/pkcshsm.conf
	-rmdir $(DESTDIR)$(SYSCONFDIR)/pkcshsm 2>/dev/null

check:
	bash scripts/test.sh

demo:
	bash scripts/rotation-demo.sh

rotation-tests:
	bash scripts/rotation-tests/run.sh

clean:
	rm -rf $(BUILD)
