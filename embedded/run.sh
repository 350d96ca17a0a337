#!/usr/bin/env bash
# The `no_std` proof of issue 12, run by CI (.ci/run) and by hand from any directory:
#
#   bash embedded/run.sh
#
# 1. builds embedded/digits-c, the digits model as a `no_std` static library (panic = "abort"),
#    links it into the C program embedded/digits-c/main.c with gcc, and runs that on the 450
#    test images of models/digits_test.safetensors;
# 2. runs the `std` example (`cargo run --release --example digits -- --predictions`) and fails
#    unless both print the same 450 predictions;
# 3. fails if the library defines or references an allocator (malloc, free, __rust_alloc, …) or
#    anything of Rust's `std` or `alloc`, or if the part of it the program links needs any C
#    function outside a short list (memcpy, memset, …, abort);
# 4. prints the code and read-only data that the library contributes to the linked program;
# 5. rebuilds the library for each SIMD level this CPU has (-C target-feature: AVX2, AVX-512)
#    and requires the same 450 predictions from each.
#
# Needs cargo (the toolchain of rust-toolchain.toml), gcc, and binutils (nm, objdump, size).
# Build products go to the cargo target directory (CARGO_TARGET_DIR if set), under digits-c/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
pkg=$here/digits-c
cd "$root"

# Where cargo puts the library, whatever CARGO_TARGET_DIR or cargo configuration says.
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$pkg/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "run.sh: cannot find cargo's target directory" >&2; exit 1; }
lib=$target_dir/release/libcnn_digits_c.a
out=$target_dir/digits-c
mkdir -p "$out"

echo "=== build: the no_std static library, then the C program ==="
cargo build --release --locked --manifest-path "$pkg/Cargo.toml"
# No -lm, -lpthread or -ldl: without `std` the library has no threads and loads nothing, and
# the runtime's f32 math (exp, tanh, …) is the Rust `libm` crate compiled into the library. Its
# only C dependencies are the few functions allowed below, all in libc, which gcc links anyway.
# --gc-sections drops the library's unused functions, and the map file says where each byte of
# the program came from (the sizes below).
cflags=(-std=c11 -O2 -Wall -Wextra -Wpedantic -Werror)
gcc "${cflags[@]}" -I "$pkg" -c "$pkg/main.c" -o "$out/main.o"
gcc "$out/main.o" "$lib" -Wl,--gc-sections -Wl,-Map="$out/digits-c.map" -o "$out/digits-c"

echo "=== run: the C program against the std example ==="
"$out/digits-c" "$root/models/digits_test.safetensors" >"$out/predictions-c.txt"
cargo run --release --locked --quiet --example digits -- --predictions >"$out/predictions-rust.txt"
n=$(wc -l <"$out/predictions-rust.txt")
if [ "$n" -ne 450 ]; then
  echo "run.sh: the std example printed $n predictions, not 450" >&2
  exit 1
fi
if ! diff -u "$out/predictions-rust.txt" "$out/predictions-c.txt" >"$out/predictions.diff"; then
  head -40 "$out/predictions.diff" >&2
  echo "run.sh: FAILED: the C program's predictions differ from the std example's" >&2
  exit 1
fi
echo "the C program (no_std library) and the std example print the same $n predictions"

echo "=== symbols of $(basename "$lib") ==="
# The objects of the archive carry LLVM bitcode beside their machine code (.llvmbc); given
# such a file, binutils tries its LLVM plugin, which may be older than rustc's LLVM and then
# reports "no symbols". Naming the host's object format (the one gcc just wrote) makes nm read
# the ELF symbol tables. nm -P prints "archive[member]: name type [value size]", one line per
# symbol, names as they are (not demangled).
bfd=$(objdump -f "$out/main.o" | sed -n 's/.*file format //p')
nm --target="$bfd" -A -P "$lib" >"$out/nm.txt"
nm --target="$bfd" -C "$lib" >"$out/nm-demangled.txt"
defined=$(awk '$3 != "U" && $3 != "w" && $3 != "v" { print $2 }' "$out/nm.txt" | sort -u)
undefined=$(awk '$3 == "U" { print $2 }' "$out/nm.txt" | sort -u)
fail=0
allocator='^(malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|__rust_alloc|__rust_dealloc|__rust_alloc_zeroed|__rust_realloc|__rust_alloc_error_handler.*|__rust_no_alloc_shim_is_unstable.*|__rg_.*|__rdl_.*)$'
if grep -E "$allocator" <<<"$defined"$'\n'"$undefined" >"$out/allocator.txt"; then
  echo "FAILED: allocator symbols:" >&2
  sed 's/^/  /' "$out/allocator.txt" >&2
  fail=1
fi
# `core::` is fine; `std::` or `alloc::` at the start of a path is not (`core::alloc::Layout` is
# core's). Demangled, so that a mangled `_ZN3std…` or `_RNv…3std…` is caught either way.
if grep -E '(^|[^[:alnum:]_:])(std|alloc)::' "$out/nm-demangled.txt" >"$out/std.txt"; then
  echo "FAILED: std or alloc symbols:" >&2
  head -20 "$out/std.txt" | sed 's/^/  /' >&2
  fail=1
fi
# What the library needs from outside, in the members of the archive the link pulled in (the
# precompiled compiler_builtins holds objects, never linked here, that name the unwinder's
# rust_eh_personality): only what a compiler emits for copies and comparisons, and `abort` (the
# panic handler). Anything else (pthread_*, dl*, write, __errno_location, _Unwind_*) would mean
# that `std` or unwinding got in.
lib_name=$(basename "$lib")
awk -v lib="$lib_name(" '
  /^Archive member included/ { on = 1; next }
  on && /^[A-Z]/ { exit } # the next part of the map
  on && index($1, lib) { m = substr($1, index($1, lib) + length(lib)); sub(/\)$/, "", m); print m }
' "$out/digits-c.map" | sort -u >"$out/linked-members.txt"
if [ ! -s "$out/linked-members.txt" ]; then
  echo "run.sh: the linker map names no member of $lib_name" >&2
  exit 1
fi
linked() { # the symbols of the given nm type class in the linked members
  awk -v want="$1" 'NR == FNR { keep[$0] = 1; next }
    { m = $1; sub(/^.*\[/, "", m); sub(/\]:$/, "", m) }
    (m in keep) && ((want == "U") == ($3 == "U")) && $3 != "w" && $3 != "v" { print $2 }
  ' "$out/linked-members.txt" "$out/nm.txt" | sort -u
}
external=$(comm -23 <(linked U) <(linked defined) | sed '/^$/d')
allowed='^(memcpy|memmove|memset|memcmp|bcmp|abort)$'
if grep -vE "$allowed" <<<"$external" | sed '/^$/d' >"$out/external.txt" && [ -s "$out/external.txt" ]; then
  echo "FAILED: the linked library needs symbols outside ${allowed}:" >&2
  sed 's/^/  /' "$out/external.txt" >&2
  fail=1
fi
echo "linked members of $lib_name: $(wc -l <"$out/linked-members.txt"); they need from C:" $external
echo "no allocator, no std or alloc symbols: $([ "$fail" = 0 ] && echo ok || echo FAILED)"
[ "$fail" = 0 ] || exit 1

echo "=== sizes: what the library puts into the linked program ==="
# From the linker map: every input section the linker kept (after --gc-sections) that came from
# the archive, summed by the output section it went into. .text is code; .rodata is read-only
# data (the weights live there); .data.rel.ro is read-only once the dynamic loader has relocated
# it (tables of pointers, in flash on a target without PIE); .eh_frame is unwind tables. Each
# .text/.rodata section is also attributed to the crate its mangled symbol names: cnn_digits_c
# is the generated network (its weights, one static) and the C functions, into which LTO
# inlines much of the runtime; cnn_runtime the kernels left as functions; core and libm the
# parts of those libraries it uses.
awk -v lib="$(basename "$lib")" '
  function hex(s,   i, v) {
    v = 0
    s = tolower(substr(s, 3))
    for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v
  }
  function crate(sec,   rest, n, m) {
    if (sec ~ /^\.(text|rodata)\.cnn_digits_/) return "cnn_digits_c"
    if (match(sec, /_ZN[0-9]+/)) {              # legacy mangling: _ZN <len> <crate> …
      n = substr(sec, RSTART + 3, RLENGTH - 3) + 0
      rest = substr(sec, RSTART + RLENGTH, n)
      sub(/^_\$LT\$/, "", rest)                # <crate::Type as …>
      sub(/(\.\.|\$).*/, "", rest)
      return rest
    }
    if (match(sec, /C(s[0-9A-Za-z]*_)?[0-9]+/)) { # v0 mangling (the precompiled core): C … <len> <crate>
      m = substr(sec, RSTART, RLENGTH)
      rest = substr(sec, RSTART + RLENGTH)
      sub(/^_/, "", rest)                      # the separator before a name starting with _
      match(m, /[0-9]+$/)
      return substr(rest, 1, substr(m, RSTART) + 0)
    }
    return "(unnamed)"
  }
  function add(sec, size, file,   c) {
    if (index(file, lib "(") == 0) return
    if (out_sec == "" || out_sec ~ /^\.(debug|comment|note|gnu)/) return # not loaded
    total[out_sec] += size
    c = crate(sec)
    if (c == "") c = "(unnamed)"
    if (out_sec == ".text" || out_sec == ".rodata") by_crate[out_sec " " c] += size
  }
  /^Linker script and memory map/ { mapping = 1; next }
  !mapping { next }
  /^[^ ]/ { out_sec = $1; pending = ""; next }
  /^ [^ *]/ {
    if (NF >= 4 && $2 ~ /^0x/ && $3 ~ /^0x/) { add($1, hex($3), $4); pending = "" }
    else if (NF == 1) pending = $1
    next
  }
  pending != "" && NF >= 3 && $1 ~ /^0x/ && $2 ~ /^0x/ { add(pending, hex($2), $3); pending = ""; next }
  { pending = "" }
  END {
    for (s in total) printf "  %-18s %8d bytes\n", s, total[s] | "sort -k2 -nr"
    close("sort -k2 -nr")
    print "  of which, by crate:"
    for (k in by_crate) { split(k, p, " "); printf "    %-8s %-22s %8d\n", p[1], substr(k, length(p[1]) + 2), by_crate[k] | "sort -k3 -nr" }
    close("sort -k3 -nr")
  }
' "$out/digits-c.map"
# The weights are one static of the generated code, the largest read-only symbol of the program.
echo "largest read-only objects of the program (nm --size-sort):"
nm --size-sort -S -C "$out/digits-c" | awk '$3 ~ /^[rR]$/' | tail -2 |
  while read -r _ size _ name; do printf '  %8d bytes  %s\n' "$((16#$size))" "$name"; done
echo "the whole program (C code, C runtime start-up and the library), as size reports it:"
size "$out/digits-c" | sed 's/^/  /'

ymm=$(objdump -d "$out/digits-c" | grep -c '%[yz]mm' || true)
if [ "$ymm" != 0 ]; then
  echo "run.sh: FAILED: the baseline build has $ymm AVX register instructions" >&2
  exit 1
fi

echo "=== the same library compiled for each SIMD level this CPU has ==="
# Without `std` there is no run-time CPU detection: the kernels run at the level the target is
# compiled for (docs/embedded.md). Rebuild the library with each x86-64 level this CPU can run,
# in its own target directory, and require the same 450 predictions again; say loudly which
# levels go untested here.
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true) "
has() {
  local f
  for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done
}
for level in avx2 avx512; do
  case $level in
    avx2) features="+avx2,+fma" && has avx2 fma && ok=1 || ok=0 ;;
    avx512) features="+avx2,+fma,+avx512f,+avx512bw,+avx512vl" &&
      has avx2 fma avx512f avx512bw avx512vl && ok=1 || ok=0 ;;
  esac
  if [ "$ok" = 0 ]; then
    echo "=== SKIPPED: the no_std library at $level: this CPU lacks it, NOT tested here ===" >&2
    continue
  fi
  dir=$target_dir/digits-c-$level
  RUSTFLAGS="-C target-feature=$features" CARGO_TARGET_DIR="$dir" \
    cargo build --release --locked --quiet --manifest-path "$pkg/Cargo.toml"
  gcc "$out/main.o" "$dir/release/libcnn_digits_c.a" -Wl,--gc-sections -o "$out/digits-c-$level"
  "$out/digits-c-$level" "$root/models/digits_test.safetensors" >"$out/predictions-c-$level.txt"
  if ! diff -u "$out/predictions-rust.txt" "$out/predictions-c-$level.txt" >&2; then
    echo "run.sh: FAILED: the no_std library at $level predicts differently" >&2
    exit 1
  fi
  # That level's kernels are the ones linked: the AVX2 build uses ymm registers and no zmm, the
  # AVX-512 build zmm (the baseline build above neither).
  ymm=$(objdump -d "$out/digits-c-$level" | grep -c '%ymm' || true)
  zmm=$(objdump -d "$out/digits-c-$level" | grep -c '%zmm' || true)
  case $level in
    avx2) [ "$ymm" -gt 1000 ] && [ "$zmm" = 0 ] ;;
    avx512) [ "$zmm" -gt 1000 ] ;;
  esac || {
    echo "run.sh: FAILED: the $level build has $ymm ymm and $zmm zmm instructions" >&2
    exit 1
  }
  echo "the no_std library at $level ($features): the same $n predictions ($ymm ymm, $zmm zmm instructions)"
done
