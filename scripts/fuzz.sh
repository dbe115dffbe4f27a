#!/usr/bin/env bash
# Coverage-guided fuzzing of the packet parser and the FTP line parser
# (cargo-fuzz / libFuzzer, targets in fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: all) for SECONDS (default 60) starting from the
# checked-in seeds (fuzz/seeds/TARGET) plus whatever earlier runs found
# (fuzz/corpus/TARGET, kept between runs, not checked in). Exits non-zero if a
# target crashes, fails an assertion, leaks, hangs (> 10 s on one input) or
# runs out of memory; the reproducing input is in fuzz/artifacts/TARGET/ and
# its path is printed.
#
# Toolchain: cargo-fuzz needs nightly compiler flags (-Zsanitizer, sanitizer
# coverage). By default the stable toolchain is used with RUSTC_BOOTSTRAP=1,
# which allows them, so nothing extra needs installing and the dependencies are
# built by the same compiler as the rest. FUZZ_TOOLCHAIN=nightly uses
# `cargo +nightly` instead. Sanitizer: AddressSanitizer (cargo-fuzz's default;
# the parser has no unsafe code, but it costs little); FUZZ_SANITIZER=none
# turns it off for faster runs. Builds go to fuzz/target and are reused.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_frame ftp_lines)
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "fuzz: cargo install cargo-fuzz failed"; exit 1; }
fi

if [ "${FUZZ_TOOLCHAIN:-stable}" = nightly ]; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

# One build for all targets (they share the dataplane library).
fuzz build --sanitizer "$sanitizer" || { echo "fuzz: build failed"; exit 1; }

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/target/fuzz-$t.log"
    echo "=== fuzz $t for ${secs}s"
    # -timeout: one input taking over 10 s is a hang and fails the run.
    fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 2>&1 | tee "$log" \
        | grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|^SUMMARY|panicked at|^==[0-9]+==ERROR|Test unit written|^Failing input|^[[:space:]]+fuzz/artifacts'
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        artifact=$(grep -oE 'Test unit written to [^ ]+' "$log" | head -1 | grep -oE 'fuzz/artifacts/.*')
        echo "--- fuzz $t FAILED (exit $rc): input ${artifact:-(none written)}, log $log"
        [ -n "$artifact" ] && echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact"
    fi
done

if [ ${#failed[@]} -eq 0 ]; then
    echo "fuzz: ${#targets[@]} targets ran ${secs}s each, no failure"
else
    echo "fuzz: ${#failed[@]} of ${#targets[@]} targets failed (${failed[*]})"
    exit 1
fi
