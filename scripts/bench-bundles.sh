#!/bin/sh
# Export one million outbox records to a bundle and import it back, with
# peak RSS and wall time (GNU time). Figures go to BENCHMARKS.md.
#   scripts/bench-bundles.sh [N]   (default 1000000)
set -eu
N=${1:-1000000}
T=${CARGO_TARGET_DIR:-target}
cargo build --release --bin relstat --example bundle_fill
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$T/release/relstat" keygen --out "$W/site-a"
mkdir "$W/trusted" && cp "$W/site-a.pub" "$W/trusted/dc-a.pub"
cat > "$W/site.toml" <<EOT
[agent]
data_dir = "$W/site"
site = "dc-a"
[spool]
enabled = true
signing_key_file = "$W/site-a.key"
EOT
cat > "$W/relay.toml" <<EOT
[agent]
data_dir = "$W/relay"
site = "central"
[spool]
enabled = true
trusted_keys_dir = "$W/trusted"
EOT
"$T/release/examples/bundle_fill" "$W/site" "$N"
ls -l "$W/site/relstat.redb"
run() { /usr/bin/time -f "$1: %e s wall, %M KiB peak RSS" "$@"; }
run "$T/release/relstat" -c "$W/site.toml" spool export --out "$W/a.bundle"
ls -l "$W/a.bundle"
run "$T/release/relstat" -c "$W/relay.toml" spool inspect "$W/a.bundle" >/dev/null
run "$T/release/relstat" -c "$W/relay.toml" spool import "$W/a.bundle"
run "$T/release/relstat" -c "$W/relay.toml" spool import "$W/a.bundle"
"$T/release/relstat" -c "$W/relay.toml" spool inspect
