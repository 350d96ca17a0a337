//! The data caches of the CPU the process runs on, read once from CPUID: the sizes that the
//! kernels' cache blocking follows (the GEMM's column blocks, Winograd's blocks of tiles), so
//! that a chip with a larger or smaller L2 than the machine the defaults were measured on gets
//! blocks of its own size.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of one core's level-1 data and level-2 caches, and of the level-3 cache (0 when
/// there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caches {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core.
    pub l2: usize,
    /// Level-3 cache (shared).
    pub l3: usize,
}

/// What the blocking assumes where CPUID does not say (another architecture, or a CPU without
/// the deterministic cache leaves): the AMD Zen 4 the defaults were first measured on.
pub(crate) const FALLBACK: Caches = Caches {
    l1d: 32 << 10,
    l2: 1 << 20,
    l3: 32 << 20,
};

/// The caches of this CPU, read on first use.
pub(crate) fn caches() -> Caches {
    // 0: not read yet (a CPU always reports a non-zero L2, else FALLBACK's is used).
    static L1D: AtomicUsize = AtomicUsize::new(0);
    static L2: AtomicUsize = AtomicUsize::new(0);
    static L3: AtomicUsize = AtomicUsize::new(0);
    if L2.load(Ordering::Relaxed) == 0 {
        let c = read();
        L1D.store(c.l1d, Ordering::Relaxed);
        L3.store(c.l3, Ordering::Relaxed);
        L2.store(c.l2, Ordering::Release);
    }
    let l2 = L2.load(Ordering::Acquire);
    Caches {
        l1d: L1D.load(Ordering::Relaxed),
        l2,
        l3: L3.load(Ordering::Relaxed),
    }
}

/// [`Caches`] from CPUID, or [`FALLBACK`].
fn read() -> Caches {
    #[cfg(target_arch = "x86_64")]
    if let Some(c) = from_cpuid() {
        return c;
    }
    FALLBACK
}

/// The deterministic cache parameters: leaf 4 (Intel), or 0x8000_001D (AMD and Hygon, with
/// the topology extensions): one sub-leaf per cache, `ways × partitions × line × sets` bytes.
#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<Caches> {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let vendor = __cpuid(0);
    let amd = matches!(
        (vendor.ebx, vendor.edx, vendor.ecx),
        // "AuthenticAMD", "HygonGenuine"
        (0x6874_7541, 0x6974_6e65, 0x444d_4163) | (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
    );
    // (A leaf past the highest answers with another leaf's values: cache_leaf looks at the
    // feature bits only when the highest extended leaf reaches past them.)
    let features = __cpuid(0x8000_0001).ecx;
    let leaf = cache_leaf(amd, vendor.eax, __cpuid(0x8000_0000).eax, features)?;
    let mut c = Caches {
        l1d: 0,
        l2: 0,
        l3: 0,
    };
    // LOOP over the sub-leaves: one per cache, then null ones (type 0), which `with_cache`
    // passes over
    for sub in 0..16 {
        let r = __cpuid_count(leaf, sub);
        c = with_cache(c, r.eax, r.ebx, r.ecx);
    }
    (c.l1d > 0 && c.l2 > 0).then_some(c)
}

/// The CPUID leaf that lists the caches, if the CPU has it: 0x8000_001D on AMD (and Hygon)
/// when the highest extended leaf (`extended`) reaches it and the topology extensions are on
/// (bit 22 of leaf 0x8000_0001's ECX, `features`), else leaf 4 when the highest basic leaf
/// (`basic`) reaches it.
fn cache_leaf(amd: bool, basic: u32, extended: u32, features: u32) -> Option<u32> {
    if amd {
        let topology = features >> 22 & 1 == 1;
        (extended >= 0x8000_001D && topology).then_some(0x8000_001D)
    } else {
        (basic >= 4).then_some(4)
    }
}

/// `c` with the cache one CPUID sub-leaf describes (`eax`: type in bits 0–4, 1 data, 2
/// instruction, 3 unified, and level in bits 5–7; `ebx`: ways − 1, partitions − 1 and line
/// bytes − 1; `ecx`: sets − 1) in its place; instruction caches and other levels change
/// nothing.
fn with_cache(mut c: Caches, eax: u32, ebx: u32, ecx: u32) -> Caches {
    let kind = eax & 0x1f;
    if kind != 1 && kind != 3 {
        return c;
    }
    let field = |v: u32| v as usize + 1;
    let bytes = field(ebx >> 22) * field(ebx >> 12 & 0x3ff) * field(ebx & 0xfff) * field(ecx);
    match eax >> 5 & 7 {
        1 => c.l1d = bytes,
        2 => c.l2 = bytes,
        3 => c.l3 = bytes,
        _ => {}
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zen 4's and Sapphire Rapids' sub-leaves, as their CPUs report them, decode to their
    /// sizes.
    #[test]
    fn sub_leaves_decode_to_the_cache_sizes() {
        let empty = Caches {
            l1d: 0,
            l2: 0,
            l3: 0,
        };
        // Zen 4 (leaf 0x8000_001D): L1d 32 KiB 8-way, L1i, L2 1 MiB 8-way, L3 32 MiB 16-way.
        let zen4 = [
            (0x121, 0x01c0_003f, 0x3f),
            (0x122, 0x01c0_003f, 0x3f),
            (0x143, 0x01c0_003f, 0x7ff),
            (0x163, 0x03c0_003f, 0x7fff),
        ];
        let c = zen4
            .iter()
            .fold(empty, |c, &(a, b, x)| with_cache(c, a, b, x));
        assert_eq!(
            c,
            Caches {
                l1d: 32 << 10,
                l2: 1 << 20,
                l3: 32 << 20
            }
        );
        // Sapphire Rapids (leaf 4): L1d 48 KiB 12-way, L2 2 MiB 16-way, L3 105 MiB 15-way.
        let spr = [
            (0x121, 0x02c0_003f, 0x3f),
            (0x122, 0x01c0_003f, 0x3f),
            (0x143, 0x03c0_003f, 0x7ff),
            (0x163, 0x0380_003f, 0x1_bfff),
        ];
        let c = spr
            .iter()
            .fold(empty, |c, &(a, b, x)| with_cache(c, a, b, x));
        assert_eq!(
            c,
            Caches {
                l1d: 48 << 10,
                l2: 2 << 20,
                l3: 105 << 20
            }
        );
        // A partitioned cache counts every partition; a level-4 cache is not ours to use, nor
        // a null sub-leaf (type 0, past the last cache).
        let c = with_cache(empty, 0x143, 0x01c0_103f, 0x7ff);
        assert_eq!(c.l2, 2 << 20);
        assert_eq!(with_cache(empty, 0x183, 0x01c0_003f, 0x7ff), empty);
        assert_eq!(with_cache(c, 0x140, 0x01c0_003f, 0x7ff), c);
    }

    #[test]
    fn the_cache_leaf_follows_the_vendor_and_the_highest_leaves() {
        // Leaf 0x8000_0001's ECX as a KVM guest on Zen 4 reports it (bit 22 among others).
        let zen4 = 0x0040_03f3;
        let topology = 1 << 22;
        assert_eq!(cache_leaf(true, 0x10, 0x8000_0028, zen4), Some(0x8000_001D));
        assert_eq!(
            cache_leaf(true, 0x10, 0x8000_001D, topology),
            Some(0x8000_001D)
        );
        assert_eq!(
            cache_leaf(true, 0x10, 0x8000_001C, topology),
            None,
            "leaf missing"
        );
        assert_eq!(
            cache_leaf(true, 0x10, 0x8000_0028, zen4 & !topology),
            None,
            "no topology"
        );
        assert_eq!(
            cache_leaf(true, 0x10, 0x8000_0028, 1 << 21 | 1 << 23),
            None,
            "bit 22 only"
        );
        assert_eq!(cache_leaf(false, 0x20, 0x8000_0008, 0), Some(4));
        assert_eq!(cache_leaf(false, 4, 0, 0), Some(4));
        assert_eq!(
            cache_leaf(false, 3, 0x8000_0028, topology),
            None,
            "leaf 4 missing"
        );
    }

    /// CPUID agrees with the kernel's own reading of this CPU's caches (Linux sysfs), an
    /// independent source.
    #[test]
    fn this_cpus_caches_agree_with_sysfs() {
        let base = "/sys/devices/system/cpu/cpu0/cache";
        let Ok(dirs) = std::fs::read_dir(base) else {
            eprintln!("SKIPPED: no {base} to compare CPUID's caches with");
            return;
        };
        let mut want = Caches {
            l1d: 0,
            l2: 0,
            l3: 0,
        };
        for d in dirs
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("index"))
        {
            let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
            let size = read("size");
            let size = size.trim();
            let bytes = match size.strip_suffix('K') {
                Some(k) => k.parse::<usize>().unwrap() << 10,
                None => size
                    .strip_suffix('M')
                    .map_or(0, |m| m.parse::<usize>().unwrap() << 20),
            };
            match (read("level").trim(), read("type").trim()) {
                ("1", "Data") => want.l1d = bytes,
                ("2", "Unified") => want.l2 = bytes,
                ("3", "Unified") => want.l3 = bytes,
                _ => {}
            }
        }
        if want.l2 == 0 {
            eprintln!("SKIPPED: {base} lists no L2");
            return;
        }
        assert_eq!(caches(), want);
        assert_eq!(caches(), caches(), "read once, then kept");
        // From CPUID itself, not the fallback (which equals the sizes of some CPUs).
        #[cfg(target_arch = "x86_64")]
        assert_eq!(from_cpuid(), Some(want));
    }
}
