#!/usr/bin/env bash
# Builds fuzz/FuzzEntry.swift with the decoders and command execution of NVMeWire,
# FathomTarget and FathomConfig into one libFuzzer binary (-sanitize=fuzzer,address) and
# runs it for SECONDS (default 60) per target, starting from the committed seed corpus.
# A crash leaves crash-* files in fuzz/findings/; turn each into a regression test.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-60}
OUT=.build-fuzz
mkdir -p "$OUT/mods" fuzz/findings
bash scripts/install-deps.sh
# The sources are compiled as one module; empty modules named like the package's satisfy
# their `import` lines.
for m in NVMeWire FathomTarget FathomConfig; do
    echo "" > "$OUT/mods/$m.swift"
    swiftc -parse-as-library -emit-module -module-name "$m" -o "$OUT/mods/$m.swiftmodule" "$OUT/mods/$m.swift"
done
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name FathomFuzz -swift-version 5 \
    -I "$OUT/mods" -I Sources/CISAL -I Sources/CNVMeTypes -lisal \
    Sources/NVMeWire/*.swift Sources/FathomTarget/*.swift Sources/FathomConfig/*.swift fuzz/FuzzEntry.swift \
    -o "$OUT/fathom-fuzz" 2>&1 | grep -v "Cannot export local symbol" || true
[[ -x $OUT/fathom-fuzz ]] || { echo "fuzz build failed" >&2; exit 1; }
status=0
for target in 0 1 2 3 4 5; do
    corpus="$OUT/corpus-$target"
    mkdir -p "$corpus"
    cp fuzz/corpus/$target-* "$corpus/" 2>/dev/null || true
    echo "[fuzz] target $target for ${SECONDS_PER_TARGET}s"
    if ! "$OUT/fathom-fuzz" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -artifact_prefix=fuzz/findings/ \
        -print_final_stats=1 2>"$OUT/target-$target.log"; then
        echo "[fuzz] target $target FOUND A CRASH: see $OUT/target-$target.log and fuzz/findings/" >&2
        tail -30 "$OUT/target-$target.log" >&2
        status=1
    else
        grep -E "stat::number_of_executed_units|stat::new_units_added" "$OUT/target-$target.log" | tr '\n' ' '; echo
    fi
done
exit $status
