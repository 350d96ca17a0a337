#!/usr/bin/env bash
# Build time and size of `#[weights]` networks (docs/benchmarks.md, "Embedded weights: build
# time and size"). Run by hand, from anywhere:
#
#     bench/build_embedded.sh            # RUNS=3 timed builds of each case, interleaved
#     RUNS=5 WORK=/tmp/be bench/build_embedded.sh
#
# Three networks: `digits` (examples/digits.rs, models/digits.safetensors), `vgg`
# (bench/src/lib.rs) and `resnet18` (tests/test_block_parity.rs). Their declarations are read
# from those files, so they stay the repository's. Everything else happens in $WORK (a new
# temporary directory unless given), outside the repository, with its own target directory:
#
# 1. A release program `gen` declares the three networks without `#[weights]`, writes
#    `Net::seeded(0).to_safetensors()` of vgg and resnet18 to $WORK/*.safetensors (digits uses
#    the committed file), and times `Net::from_safetensors(bytes)` on each file (what the old
#    `embedded()` paid on its first call) and the first and second `forward_in` of the decoded
#    network (the first prepares the kernels' layouts). Binaries `<net>_first` (below) time the
#    first and second `forward_in` of `Net::EMBEDDED`, which has nothing to decode or prepare.
# 2. Crates depending on `cnn = { path = <repo> }` (all dependencies built once, untimed):
#    - `emb_std`, binaries `<net>_seeded` (a: no `#[weights]`, `Net::seeded(0)`) and
#      `<net>_weights` (b: `#[weights]`, `Net::EMBEDDED`), each running `forward_in` once on
#      zeros so that the weights are linked; plus `<net>_const` for CONST_NETS (default
#      `digits vgg`; d: not the library, a const-evaluation prototype: a `const fn` decodes the
#      data of `include_bytes!` of the file, 4-byte little-endian floats, into a
#      `static [f32; N]`; raw decode only, no layout, no batch-norm folding, so a lower bound
#      for const evaluation);
#    - `emb_opt`, binaries `<net>_weights_opt` (e: b's source, in a crate with
#      `[profile.release.build-override] opt-level = 3`, so that the macro, and cnn-runtime's
#      layout functions it calls, run optimised; cargo builds proc macros at opt-level 0);
#    - `nostd_<net>` (c: `#![no_std]` staticlib, `default-features = false`, `panic = "abort"`,
#      a `#[panic_handler]`, an `extern "C"` function running `Net::EMBEDDED.forward_in`).
# 3. RUNS rounds; each round touches the source and times an incremental release build of every
#    case in turn (`/usr/bin/time -f "%e %U %S %M"` around `cargo build --release`), so the cases
#    are interleaved and share the machine's load. %M is the peak RSS of the largest process
#    cargo waited for, which is rustc. `uptime` is logged with every run.
# 4. Sizes: `nm -S` of the `__CORE` / `__STD` statics (the weights as laid out by the macro) in
#    the binary or the staticlib, the `.rodata` of the binary (`size -A`), and the file's size.
#
# SKIP_TIMING=1 with the WORK of an earlier run skips the timed builds (not the decode timing)
# and prints the table from that run's runs.txt; files whose content is unchanged are not
# rewritten, so nothing is rebuilt.
#
# Output: every run in $WORK/runs.txt, the decode timings in $WORK/decode.txt and
# $WORK/first.txt, and Markdown
# tables (medians) on stdout and in $WORK/table.md. Needs cargo, GNU time, nm and size.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/build_embedded.XXXXXX)}
RUNS=${RUNS:-3}
NETS=(digits vgg resnet18)
# The const-evaluation prototype (case d): resnet18 would take minutes.
read -r -a CONST_NETS <<<"${CONST_NETS:-digits vgg}"
mkdir -p "$WORK"
export CARGO_TARGET_DIR="$WORK/target"
echo "work directory: $WORK" >&2

# Writes stdin to $1 unless $1 already holds exactly that (so a rerun rebuilds nothing).
put() {
    local tmp
    tmp=$(mktemp "$WORK/put.XXXXXX")
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm "$tmp"; else mv "$tmp" "$1"; fi
}

# The declaration of `pub struct $2 { … }` in $REPO/$1, from its first line to its closing brace.
decl() {
    awk -v head="pub struct $2 {" 'index($0, head) { p = 1 } p { print } p && /^ *}$/ { exit }' \
        "$REPO/$1"
}
struct_of() { case $1 in digits) echo Digits ;; vgg) echo Vgg ;; resnet18) echo Resnet18 ;; esac; }
declaration() {
    case $1 in
        digits) decl examples/digits.rs Digits ;;
        vgg) decl bench/src/lib.rs Vgg ;;
        resnet18) decl tests/test_block_parity.rs Resnet18 ;;
    esac
}
weights_file() {
    case $1 in
        digits) echo "$REPO/models/digits.safetensors" ;;
        *) echo "$WORK/$1.safetensors" ;;
    esac
}
for net in "${NETS[@]}"; do
    [ -n "$(declaration "$net")" ] || { echo "no declaration found for $net" >&2; exit 1; }
done

# The network, with `#[weights = "…"]` if $2 is `weights`.
cnn_block() {
    local net=$1 kind=$2
    echo "cnn! {"
    if [ "$kind" = weights ]; then echo "    #[weights = \"$(weights_file "$net")\"]"; fi
    declaration "$net"
    echo "}"
}

# --- 1. weight files and decode timing -------------------------------------------------------
mkdir -p "$WORK/gen/src"
put "$WORK/gen/Cargo.toml" <<EOF
[package]
name = "gen"
version = "0.1.0"
edition = "2021"
[dependencies]
cnn = { path = "$REPO" }
[workspace]
EOF
{
    echo "use cnn::{cnn, Model, SliceModel};"
    echo "use std::time::Instant;"
    for net in "${NETS[@]}"; do cnn_block "$net" seeded; done
    cat <<'EOF'
/// Median and minimum of 5 decodes of `bytes`, then the first and the second `forward_in` of a
/// decoded network (the first prepares the kernels' layouts, which `EMBEDDED` has ready), in ms.
fn decode<N: Model + SliceModel>(name: &str, bytes: &[u8]) {
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let net = N::from_safetensors(std::hint::black_box(bytes)).unwrap();
            let e = t.elapsed().as_secs_f64() * 1e3;
            drop(std::hint::black_box(net));
            e
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let net = N::from_safetensors(bytes).unwrap();
    let input = vec![0.5f32; N::INPUT_LEN];
    let mut out = vec![0f32; N::OUTPUT_LEN];
    let mut ws = vec![0f32; N::WORKSPACE_LEN];
    let mut forward = || {
        let t = Instant::now();
        net.forward_in(&input, &mut out, &mut ws).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (first, second) = (forward(), forward());
    println!("{name} {} {:.3} {:.3} {first:.3} {second:.3}", N::PARAMS, ms[2], ms[0]);
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let write = |path: &str, bytes: Vec<u8>| std::fs::write(path, bytes).unwrap();
    match args[1].as_str() {
        "write" => {
            write(&args[2], Vgg::seeded(0).to_safetensors());
            write(&args[3], Resnet18::seeded(0).to_safetensors());
        }
        _ => {
            let read = |path: &str| std::fs::read(path).unwrap();
            decode::<Digits>("digits", &read(&args[2]));
            decode::<Vgg>("vgg", &read(&args[3]));
            decode::<Resnet18>("resnet18", &read(&args[4]));
        }
    }
}
EOF
} | put "$WORK/gen/src/main.rs"
cargo build -q --release --manifest-path "$WORK/gen/Cargo.toml"
GEN="$CARGO_TARGET_DIR/release/gen"
# Seed 0 gives the same bytes every time: files already there are kept, so a rerun rebuilds nothing.
[ -s "$(weights_file vgg)" ] && [ -s "$(weights_file resnet18)" ] \
    || "$GEN" write "$(weights_file vgg)" "$(weights_file resnet18)"

# --- 2. the crates -----------------------------------------------------------------------------
mkdir -p "$WORK/emb_std/src/bin"
put "$WORK/emb_std/Cargo.toml" <<EOF
[package]
name = "emb_std"
version = "0.1.0"
edition = "2021"
[dependencies]
cnn = { path = "$REPO" }
[workspace]
EOF
for net in "${NETS[@]}"; do
    s=$(struct_of "$net")
    for kind in seeded weights; do
        if [ "$kind" = seeded ]; then make="&$s::seeded(0)"; else make="$s::EMBEDDED"; fi
        {
            echo "#[allow(unused_imports)]"
            echo "use cnn::{cnn, Model};"
            cnn_block "$net" "$kind"
            cat <<EOF
fn main() {
    let net: &$s = $make;
    let input = vec![0f32; $s::INPUT_LEN];
    let mut out = vec![0f32; $s::OUTPUT_LEN];
    let mut ws = vec![0f32; $s::WORKSPACE_LEN];
    net.forward_in(&input, &mut out, &mut ws).unwrap();
    println!("{}", out[0]);
}
EOF
        } | put "$WORK/emb_std/src/bin/${net}_$kind.rs"
    done
done
# First and second `forward_in` of `Net::EMBEDDED`, in ms, for the decode table.
for net in "${NETS[@]}"; do
    s=$(struct_of "$net")
    {
        echo "use cnn::cnn;"
        cnn_block "$net" weights
        cat <<EOF
fn main() {
    let net: &$s = $s::EMBEDDED;
    let input = vec![0.5f32; $s::INPUT_LEN];
    let mut out = vec![0f32; $s::OUTPUT_LEN];
    let mut ws = vec![0f32; $s::WORKSPACE_LEN];
    let mut forward = || {
        let t = std::time::Instant::now();
        net.forward_in(&input, &mut out, &mut ws).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (first, second) = (forward(), forward());
    println!("{first:.3} {second:.3}");
}
EOF
    } | put "$WORK/emb_std/src/bin/${net}_first.rs"
done
for net in "${CONST_NETS[@]}"; do
    put "$WORK/emb_std/src/bin/${net}_const.rs" <<EOF
//! Const-evaluation prototype: the data of the $net file, decoded at compile time.
// Without this, rustc stops a const evaluation of more than about 2 M steps.
#![allow(long_running_const_eval)]
const BYTES: &[u8] = include_bytes!("$(weights_file "$net")");
const DATA: usize = 8 + u64::from_le_bytes([
    BYTES[0], BYTES[1], BYTES[2], BYTES[3], BYTES[4], BYTES[5], BYTES[6], BYTES[7],
]) as usize;
const N: usize = (BYTES.len() - DATA) / 4;
const fn decode() -> [f32; N] {
    let mut out = [0f32; N];
    let mut i = 0;
    while i < N {
        let o = DATA + 4 * i;
        out[i] = f32::from_le_bytes([BYTES[o], BYTES[o + 1], BYTES[o + 2], BYTES[o + 3]]);
        i += 1;
    }
    out
}
static W: [f32; N] = decode();
fn main() {
    println!("{} {}", N, std::hint::black_box(&W).iter().sum::<f32>());
}
EOF
done
for net in "${NETS[@]}"; do
    s=$(struct_of "$net")
    d="$WORK/nostd_$net"
    mkdir -p "$d/src"
    put "$d/Cargo.toml" <<EOF
[package]
name = "nostd_$net"
version = "0.1.0"
edition = "2021"
[lib]
crate-type = ["staticlib"]
[dependencies]
cnn = { path = "$REPO", default-features = false }
[profile.release]
panic = "abort"
[profile.dev]
panic = "abort"
[workspace]
EOF
    {
        echo "#![no_std]"
        echo "use cnn::cnn;"
        cnn_block "$net" weights
        cat <<EOF
static NET: &$s = $s::EMBEDDED;
/// Runs the network on \`input\`; 0 on success.
#[no_mangle]
pub extern "C" fn run_$net(
    input: &[f32; $s::INPUT_LEN],
    out: &mut [f32; $s::OUTPUT_LEN],
    ws: &mut [f32; $s::WORKSPACE_LEN],
) -> i32 {
    match NET.forward_in(input, out, ws) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
EOF
    } | put "$d/src/lib.rs"
done

# Case e: b again, in a crate whose proc macros (and their dependencies, cnn-runtime among them)
# are optimised: `[profile.release.build-override] opt-level = 3` (cargo's default is 0).
mkdir -p "$WORK/emb_opt/src/bin"
{
    sed 's/^name = "emb_std"$/name = "emb_opt"/' "$WORK/emb_std/Cargo.toml"
    printf '[profile.release.build-override]\nopt-level = 3\n'
} | put "$WORK/emb_opt/Cargo.toml"
for net in "${NETS[@]}"; do
    put "$WORK/emb_opt/src/bin/${net}_weights_opt.rs" <"$WORK/emb_std/src/bin/${net}_weights.rs"
done

# Untimed first builds: every dependency, and every case once.
cargo build -q --release --manifest-path "$WORK/emb_std/Cargo.toml" --bins
cargo build -q --release --manifest-path "$WORK/emb_opt/Cargo.toml" --bins
for net in "${NETS[@]}"; do
    cargo build -q --release --manifest-path "$WORK/nostd_$net/Cargo.toml"
done

# --- 3. timed incremental builds ---------------------------------------------------------------
# case name: "<net> <a|b|c|d>"; a source file to touch and the cargo arguments.
cases=()
for net in "${NETS[@]}"; do
    cases+=("$net a" "$net b" "$net e" "$net c")
done
for net in "${CONST_NETS[@]}"; do cases+=("$net d"); done
source_of() {
    case $2 in
        a) echo "$WORK/emb_std/src/bin/$1_seeded.rs" ;;
        e) echo "$WORK/emb_opt/src/bin/$1_weights_opt.rs" ;;
        b) echo "$WORK/emb_std/src/bin/$1_weights.rs" ;;
        c) echo "$WORK/nostd_$1/src/lib.rs" ;;
        d) echo "$WORK/emb_std/src/bin/$1_const.rs" ;;
    esac
}
# Sets `args`, the arguments of `cargo build --release` for one case.
build_args() {
    case $2 in
        a) args=(--manifest-path "$WORK/emb_std/Cargo.toml" --bin "$1_seeded") ;;
        e) args=(--manifest-path "$WORK/emb_opt/Cargo.toml" --bin "$1_weights_opt") ;;
        b) args=(--manifest-path "$WORK/emb_std/Cargo.toml" --bin "$1_weights") ;;
        c) args=(--manifest-path "$WORK/nostd_$1/Cargo.toml") ;;
        d) args=(--manifest-path "$WORK/emb_std/Cargo.toml" --bin "$1_const") ;;
    esac
}
: "${SKIP_TIMING:=}"
[ -n "$SKIP_TIMING" ] || : >"$WORK/runs.txt"
[ -n "$SKIP_TIMING" ] || for round in $(seq "$RUNS"); do
    for c in "${cases[@]}"; do
        read -r net kind <<<"$c"
        load=$(uptime | sed 's/.*load average: //')
        touch "$(source_of "$net" "$kind")"
        build_args "$net" "$kind"
        /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" cargo build -q --release "${args[@]}"
        read -r wall user sys rss <"$WORK/time.txt"
        echo "$net $kind $round $wall $user $sys $rss $load" | tee -a "$WORK/runs.txt" >&2
    done
done

# Decode timing, after the builds (not during them).
"$GEN" decode "$(weights_file digits)" "$(weights_file vgg)" "$(weights_file resnet18)" \
    | tee "$WORK/decode.txt" >&2
for net in "${NETS[@]}"; do
    echo "$net $("$CARGO_TARGET_DIR/release/${net}_first")"
done | tee "$WORK/first.txt" >&2

# --- 4. sizes and table --------------------------------------------------------------------------
# Sum of the sizes of the symbols matching $2 in $1 (bytes).
symbytes() {
    local total=0 hex
    for hex in $({ nm -S "$1" 2>/dev/null || true; } | awk -v pat="$2" 'NF == 4 && $4 ~ pat { print $2 }'); do
        total=$((total + 16#$hex))
    done
    echo "$total"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
field() { awk -v n="$1" -v k="$2" -v f="$3" '$1 == n && $2 == k { print $f }' "$WORK/runs.txt"; }
cpu() { awk -v n="$1" -v k="$2" '$1 == n && $2 == k { printf "%.2f\n", $5 + $6 }' "$WORK/runs.txt"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
{
    echo "| network | params | file (MiB) | case | median wall (s) | median CPU user+sys (s) | median peak RSS (MiB) | \`__CORE\` (MiB) | \`__STD\` (MiB) | .rodata (MiB) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for c in "${cases[@]}"; do
        read -r net kind <<<"$c"
        params=$(awk -v n="$net" '$1 == n { print $2 }' "$WORK/decode.txt")
        file=$(mib "$(stat -c %s "$(weights_file "$net")")")
        wall=$(field "$net" "$kind" 4 | median)
        cpu_s=$(cpu "$net" "$kind" | median)
        rss=$(field "$net" "$kind" 7 | median)
        case $kind in
            a) label="a: seeded, no \`#[weights]\`"; art="$CARGO_TARGET_DIR/release/${net}_seeded" ;;
            e) label="e: as b, proc macros built with opt-level 3"; art="$CARGO_TARGET_DIR/release/${net}_weights_opt" ;;
            b) label="b: \`#[weights]\`, std binary"; art="$CARGO_TARGET_DIR/release/${net}_weights" ;;
            c) label="c: \`#[weights]\`, no_std staticlib"; art="$CARGO_TARGET_DIR/release/libnostd_$net.a" ;;
            d) label="d: const-eval prototype (raw decode only)"; art="$CARGO_TARGET_DIR/release/${net}_const" ;;
        esac
        if [ "$kind" = d ]; then
            core=$(mib "$(symbytes "$art" "${net}_const1W")") std="–"
        else
            core=$(mib "$(symbytes "$art" '__CORE')") std=$(mib "$(symbytes "$art" '__STD')")
        fi
        if [ "$kind" = c ]; then
            rodata="–"
        else
            rodata=$(mib "$(size -A "$art" | awk '$1 == ".rodata" { print $2 }')")
        fi
        echo "| $net | $params | $file | $label | $wall | $cpu_s | $(awk -v k="$rss" 'BEGIN { printf "%.0f", k / 1024 }') | $core | $std | $rodata |"
    done
    echo
    echo "| network | \`from_safetensors\`, median / min of 5 (ms) | first / second \`forward_in\`, decoded network (ms) | first / second \`forward_in\`, \`EMBEDDED\` (ms) |"
    echo "|---|---|---|---|"
    awk 'NR == FNR { f[$1] = $2 " / " $3; next }
        { printf "| %s | %s / %s | %s / %s | %s |\n", $1, $3, $4, $5, $6, f[$1] }' \
        "$WORK/first.txt" "$WORK/decode.txt"
} | tee "$WORK/table.md"
