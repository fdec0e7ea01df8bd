//! The workload the call-site benchmarks share (`benches/callsite.rs`,
//! `benches/instructions.rs`): one small function, bare and under `#[probe]`.

use ferrite_obs::probe;

/// FNV-1a over the eight bytes of `x`: a few ns, a short key's hash.
#[inline(always)]
pub fn fnv(x: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in x.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The workload, bare.
#[inline(never)]
pub fn work(x: u64) -> u64 {
    fnv(x)
}

/// The workload under `#[probe]`; its site is named `work_probed`.
#[probe(skip_all)]
#[inline(never)]
pub fn work_probed(x: u64) -> u64 {
    fnv(x)
}

/// The workload as a command root (`#[probe(command)]`): an id claimed and
/// released, the current-command cell set and restored.
#[probe(command, name = "WORK", skip_all)]
#[inline(never)]
pub fn work_command(x: u64) -> u64 {
    fnv(x)
}
