#!/usr/bin/env bash
# The packages, end to end on this (Debian) machine: build the .deb and the
# .rpm, install the .deb (dpkg -i), check the installed config and unit,
# run the agent once as its user, purge, and check nothing is left; compare
# the .rpm's file list with the .deb's. tests/packaging.rs runs it once.
#
# Tools: cargo-deb and cargo-generate-rpm are installed when missing if
# CI=true or RELSTAT_INSTALL_TOOLS=1 (about 1 and 3.5 min); otherwise the
# script exits 77 (skipped). dpkg, rpm and systemd-analyze come from
# scripts/install-peers.sh. Needs root (or sudo) for dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "packaging/test.sh: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { log "needs root or sudo for dpkg -i"; exit 77; }
  SUDO="sudo"
fi

for t in deb generate-rpm; do
  if ! cargo "$t" --version >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ] || [ "${RELSTAT_INSTALL_TOOLS:-}" = "1" ]; then
      log "installing cargo-$t"
      nice -n 19 cargo install --locked "cargo-$t"
    else
      log "SKIPPED: cargo-$t is not installed (CI=true or RELSTAT_INSTALL_TOOLS=1 installs it)"
      exit 77
    fi
  fi
done
for t in dpkg-deb rpm systemd-analyze; do
  command -v "$t" >/dev/null 2>&1 || {
    [ "${CI:-}" = "true" ] && fail "$t is not installed (scripts/install-peers.sh)"
    log "SKIPPED: $t is not installed (scripts/install-peers.sh)"; exit 77; }
done
if dpkg-query -W -f='${Status}' relstat 2>/dev/null | grep -q installed; then
  fail "a relstat package is already installed here: not touching it"
fi

# nice: the test suite runs other tests meanwhile (timing-bounded ones
# among them) on as few as 2 cores.
nice -n 19 packaging/build.sh
out="${CARGO_TARGET_DIR:-target}/packages"
deb=$(ls "$out"/*.deb)
rpm=$(ls "$out"/*.rpm)

# --- the two packages carry the same files ---
deb_files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $NF}' | sed 's#^\./#/#' | sort)
rpm_files=$(rpm -qpl "$rpm" | sort)
# the only differences: Debian's copyright file, and each distribution's zsh directory
norm() { grep -v '^/usr/share/doc/relstat/copyright$' | sed 's#/zsh/vendor-completions/#/zsh/site-functions/#' | sort; }
if [ "$(echo "$deb_files" | norm)" != "$(echo "$rpm_files" | norm)" ]; then
  diff <(echo "$deb_files" | norm) <(echo "$rpm_files" | norm) >&2 || true
  fail ".deb and .rpm file lists differ"
fi
for f in /usr/bin/relstat /usr/lib/systemd/system/relstat.service /etc/relstat/relstat.toml \
         /usr/share/man/man1/relstat.1.gz /usr/share/bash-completion/completions/relstat \
         /usr/share/relstat/dashboards/dora.json /usr/share/relstat/alerts/relstat.rules.yml \
         /usr/share/doc/relstat/runbook.md /usr/share/doc/relstat/README.md; do
  echo "$rpm_files" | grep -qx "$f" || fail "$f is not in the .rpm"
done
# every reference document, in both packages (the file lists are equal above)
for d in docs/*.md; do
  f="/usr/share/doc/relstat/$(basename "$d")"
  echo "$rpm_files" | grep -qx "$f" || fail "$f is not in the .rpm"
  echo "$deb_files" | grep -qx "$f" || fail "$f is not in the .deb"
done
dpkg-deb -f "$deb" Depends | grep -q adduser || fail "the .deb does not depend on adduser"
# A binary with packed relocations (build.rs) needs glibc 2.36: the .deb must say so.
if readelf -d packaging/generated/relstat | grep -q '(RELR)'; then
  dpkg-deb -f "$deb" Depends | grep -Eq 'libc6 \(>= 2\.(3[6-9]|[4-9][0-9])' \
    || fail "the .deb's Depends lacks libc6 (>= 2.36) for packed relocations: $(dpkg-deb -f "$deb" Depends)"
fi
dpkg-deb -I "$deb" conffiles | grep -qx /etc/relstat/relstat.toml || fail "relstat.toml is not a conffile"
rpm -qp --configfiles "$rpm" | grep -qx /etc/relstat/relstat.toml || fail "relstat.toml is not %config in the .rpm"
rpm -qp --scripts "$rpm" | grep -q useradd || fail "the .rpm does not create its user"

# --- install the .deb ---
cleanup() { $SUDO dpkg --purge relstat >/dev/null 2>&1 || true; }
trap cleanup EXIT
$SUDO dpkg -i "$deb" >&2
[ -L /etc/systemd/system/multi-user.target.wants/relstat.service ] || fail "the unit is not enabled"
getent passwd relstat >/dev/null || fail "no user relstat after install"
[ "$(stat -c %U:%a /var/lib/relstat)" = "relstat:750" ] || fail "/var/lib/relstat: $(stat -c %U:%a /var/lib/relstat)"
[ "$(stat -c %G:%a /etc/relstat/relstat.toml)" = "relstat:640" ] || fail "relstat.toml: $(stat -c %G:%a /etc/relstat/relstat.toml)"
/usr/bin/relstat check-config -c /etc/relstat/relstat.toml >&2 || fail "check-config on the packaged config"
man -l /usr/share/man/man1/relstat.1.gz >/dev/null 2>&1 || zcat /usr/share/man/man1/relstat.1.gz | grep -q '^\.TH relstat' \
  || fail "the man page does not read"
zcat /usr/share/man/man1/relstat.1.gz | grep -q '/usr/share/doc/relstat/' \
  || fail "the man page does not point at /usr/share/doc/relstat/"
for d in config metrics events; do
  [ -s "/usr/share/doc/relstat/$d.md" ] || fail "/usr/share/doc/relstat/$d.md is not installed"
done
grep -q relstat /usr/share/bash-completion/completions/relstat || fail "bash completion"
v=$(systemd-analyze verify --man=no /usr/lib/systemd/system/relstat.service 2>&1) || fail "verify: $v"
[ -z "$v" ] || fail "systemd-analyze verify: $v"
# The packaged config works on a fresh host: the agent, as its user, reads
# its (absent) log directory, commits its store, exits.
$SUDO runuser -u relstat -- /usr/bin/relstat run --once -c /etc/relstat/relstat.toml >&2 \
  || fail "relstat run --once as user relstat with the packaged config"
[ -n "$(ls -A /var/lib/relstat)" ] || fail "the agent wrote nothing in /var/lib/relstat"

# --- upgrade keeps a changed config ---
echo "# changed by the operator" | $SUDO tee -a /etc/relstat/relstat.toml >/dev/null
$SUDO dpkg -i --force-confold "$deb" >&2
grep -q "changed by the operator" /etc/relstat/relstat.toml || fail "reinstall overwrote the config"

# --- purge leaves nothing ---
$SUDO dpkg --purge relstat >&2
trap - EXIT
for p in /usr/bin/relstat /etc/relstat /var/lib/relstat /usr/lib/systemd/system/relstat.service /usr/share/relstat \
         /etc/systemd/system/multi-user.target.wants/relstat.service; do
  [ ! -e "$p" ] || fail "$p is left after purge"
done
! getent passwd relstat >/dev/null || fail "user relstat is left after purge"
! getent group relstat >/dev/null || fail "group relstat is left after purge"
log "OK: $(basename "$deb") and $(basename "$rpm")"
