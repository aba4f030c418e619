#!/usr/bin/env bash
# The whole test suite: unit and integration tests (swift test: wire codecs, subsystem
# model, storage, config, and the real daemon driven by the Swift initiator), then the
# kernel end-to-end test (the Linux nvme-tcp host in a QEMU guest against a release fathomd).
# FATHOM_SKIP_E2E=1 skips the VM part.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ${FATHOM_SKIP_E2E:-0} == 1 ]]; then bash scripts/install-deps.sh; else bash scripts/install-deps.sh --e2e; fi
swift build --build-tests
swift test --skip-build
if [[ ${FATHOM_SKIP_E2E:-0} != 1 ]]; then
    swift build -c release --product fathomd
    swift build -c release --product fathomctl
    bash scripts/e2e/kernel-e2e.sh --fathomd .build/release/fathomd
fi
