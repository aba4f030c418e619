#!/usr/bin/env bash
# Sets up and runs the demo target: installs the build dependencies, builds fathomd and
# fathomctl in release mode and serves a sparse 1 GiB image on 127.0.0.1:4420. Ctrl-C stops it.
# While it runs, `.build/release/fathomctl status` (same user) talks to it.
# Extra arguments go to fathomd (e.g. --demo-listen 0.0.0.0:4420, --demo-image PATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-deps.sh
swift build -c release --product fathomd
swift build -c release --product fathomctl
exec .build/release/fathomd --demo "$@"
