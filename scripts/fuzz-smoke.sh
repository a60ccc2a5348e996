#!/usr/bin/env bash
# Fuzz smoke step: runs every cargo-fuzz target of the repository for a short, bounded time,
# each starting from its checked-in seed corpus (fuzz/corpus/TARGET/seed-*). A crash, a leak, a
# timeout or a fuzz crate that does not build fails the step; libFuzzer leaves the failing input
# in that crate's fuzz/artifacts/TARGET/ folder.
#
#   FUZZ_SECONDS     seconds per target (default 20)
#   FUZZ_JOBS        targets fuzzed at once (default: the number of cores)
#   FUZZ_TARGET_DIR  one cargo target dir for all fuzz crates, so shared dependencies build once
#                    (default target/fuzz-smoke)
#   FUZZ_ONLY        run only the targets whose "crate-dir:target" contains this text
#
# README.md ("Fuzzing") describes a longer campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds="${FUZZ_SECONDS:-20}"
jobs_max="${FUZZ_JOBS:-$(nproc)}"
target_dir="${FUZZ_TARGET_DIR:-$root/target/fuzz-smoke}"
only="${FUZZ_ONLY:-}"
# cargo-fuzz passes nightly flags (-Zsanitizer); the stable toolchain accepts them with this.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# libFuzzer writes what it discovers into its first corpus folder: a scratch one, so the
# checked-in seeds stay as they are.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

fuzz_dirs=$(find . -path ./target -prune -o -path '*/fuzz/Cargo.toml' -print |
    grep -v '/fuzz/target/' | sed 's|^\./||; s|/Cargo.toml$||' | sort)

failures=()
started=$SECONDS

# Phase 1: build each fuzz crate (cargo uses every core for one crate at a time).
runs=()
for dir in $fuzz_dirs; do
    if ! targets=$(cd "$dir" && cargo fuzz list) || [[ -z "$targets" ]]; then
        failures+=("$dir (cargo fuzz list names no target)")
        continue
    fi
    selected=()
    for t in $targets; do
        if [[ "$dir:$t" == *"$only"* ]]; then
            selected+=("$t")
        fi
    done
    [[ ${#selected[@]} -eq 0 ]] && continue
    echo "== build $dir ($((SECONDS - started)) s)"
    if ! (cd "$dir" && cargo fuzz build --target-dir "$target_dir" >"$scratch/build.log" 2>&1); then
        tail -n 40 "$scratch/build.log" >&2
        failures+=("$dir (does not build)")
        continue
    fi
    for t in "${selected[@]}"; do
        if ! compgen -G "$dir/corpus/$t/seed-*" >/dev/null; then
            failures+=("$dir:$t (no seeds in $dir/corpus/$t/)")
            continue
        fi
        runs+=("$dir:$t")
    done
done
echo "== built in $((SECONDS - started)) s; fuzzing ${#runs[@]} targets, ${seconds} s each, $jobs_max at once"

# Phase 2: fuzz, FUZZ_JOBS targets at a time.
fuzz_one() {
    local dir=$1 t=$2 log=$3 rc=0
    # Only the checked-in seeds, so a local run starts where CI does (a local corpus/ may
    # also hold earlier campaigns' finds).
    mkdir -p "$scratch/corpus/$dir/$t" "$scratch/seeds/$dir/$t"
    cp "$dir/corpus/$t"/seed-* "$scratch/seeds/$dir/$t/"
    (cd "$dir" && cargo fuzz run --target-dir "$target_dir" "$t" \
        "$scratch/corpus/$dir/$t" "$scratch/seeds/$dir/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1) \
        >"$log" 2>&1 || rc=$?
    echo "$rc" >"$log.rc"
}
for run in "${runs[@]}"; do
    while [[ $(jobs -rp | wc -l) -ge $jobs_max ]]; do
        wait -n || true
    done
    fuzz_one "${run%%:*}" "${run##*:}" "$scratch/${run//\//_}.log" &
done
wait

for run in "${runs[@]}"; do
    log="$scratch/${run//\//_}.log"
    stats=$(grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" |
        awk '{print $2}' | paste -sd/ - || true)
    if [[ "$(cat "$log.rc" 2>/dev/null)" == 0 ]]; then
        echo "ok   $run (executions/new units: ${stats:-?})"
    else
        tail -n 40 "$log" >&2
        echo "FAIL $run: input in ${run%%:*}/artifacts/${run##*:}/" >&2
        failures+=("$run")
    fi
done

echo "fuzz smoke: ${#runs[@]} targets, ${#failures[@]} failure(s), $((SECONDS - started)) s"
if [[ ${#failures[@]} -gt 0 ]]; then
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
