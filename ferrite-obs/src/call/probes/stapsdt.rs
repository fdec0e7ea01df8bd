//! SystemTap (stapsdt v3) probes through the `usdt` crate: a `nop` and an ELF
//! note per call site, gated by a 16-bit semaphore that the kernel raises
//! while a tracer is attached. Argument closures run only when it is raised.

// Strings and keys travel as their address in a u64: `usdt` describes
// pointer-typed arguments as memory operands (`8@(%rsi)`), which would hand
// tracers the first bytes of the string instead of its address.
#[usdt::provider]
mod ferrite {
    fn probe_enter(site: u64, command: u64) {}
    fn probe_exit(site: u64, command: u64, elapsed_ns: u64, error: u8) {}
    fn command_start(command: u64, name: u64) {}
    fn command_end(command: u64, name: u64, elapsed_ns: u64, error: u8) {}
    fn storage_read(command: u64, key: u64, key_len: u64, bytes: u64, latency_ns: u64) {}
    fn storage_write(command: u64, key: u64, key_len: u64, bytes: u64, latency_ns: u64) {}
    fn replication_sync(replica: u64, offset: u64, bytes: u64, latency_ns: u64) {}
    fn connection_accept(connection: u64, fd: i64) {}
    fn connection_close(connection: u64, commands: u64, lifetime_ns: u64) {}
}

// The gate: the recording switch and the semaphores of the probes that a
// `#[probe]` call fires, side by side in one 16-byte block, so that an
// inactive plain call tests them with one load (see `wanted`):
//
// | offset | what |
// |---|---|
// | 0 | the recording switch (`crate::call::recording::set_recording`), a byte, and a spare byte |
// | 2 | `probe_enter`'s semaphore |
// | 4 | `probe_exit`'s semaphore |
// | 6 | `command_start`'s semaphore |
// | 8 | `command_end`'s semaphore |
//
// Those semaphores are defined here as strong (hidden) symbols: `usdt`'s
// weak definitions next to probe sites then all resolve to these, wherever
// the linker meets them. The kernel raises a semaphore with a 16-bit
// read-modify-write of its own two bytes, never touching its neighbours.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    r#"
    .pushsection .probes, "aw", "progbits"
    .balign 16
    .globl __ferrite_gate
    .hidden __ferrite_gate
    .type __ferrite_gate, @object
    .size __ferrite_gate, 16
__ferrite_gate:
    .zero 2
    .globl __usdt_sema_ferrite_probe_enter
    .hidden __usdt_sema_ferrite_probe_enter
    .type __usdt_sema_ferrite_probe_enter, @object
    .size __usdt_sema_ferrite_probe_enter, 2
__usdt_sema_ferrite_probe_enter:
    .zero 2
    .globl __usdt_sema_ferrite_probe_exit
    .hidden __usdt_sema_ferrite_probe_exit
    .type __usdt_sema_ferrite_probe_exit, @object
    .size __usdt_sema_ferrite_probe_exit, 2
__usdt_sema_ferrite_probe_exit:
    .zero 2
    .globl __usdt_sema_ferrite_command_start
    .hidden __usdt_sema_ferrite_command_start
    .type __usdt_sema_ferrite_command_start, @object
    .size __usdt_sema_ferrite_command_start, 2
__usdt_sema_ferrite_command_start:
    .zero 2
    .globl __usdt_sema_ferrite_command_end
    .hidden __usdt_sema_ferrite_command_end
    .type __usdt_sema_ferrite_command_end, @object
    .size __usdt_sema_ferrite_command_end, 2
__usdt_sema_ferrite_command_end:
    .zero 2
    .zero 6
    .popsection
"#
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    /// The gate's first eight bytes; its first byte is the recording switch.
    static __ferrite_gate: core::sync::atomic::AtomicBool;
}

/// The process-wide recording switch, in the gate.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn recording_switch() -> &'static core::sync::atomic::AtomicBool {
    // SAFETY: `__ferrite_gate` is defined above: 16 writable, zeroed bytes,
    // 16-byte aligned, of which this is the first (a valid `false`); only
    // this `AtomicBool` writes that byte.
    unsafe { &__ferrite_gate }
}

/// The gate's first eight bytes, read with one RIP-relative load (through
/// `sym`, not the GOT): the switch and the semaphores of `probe_enter`,
/// `probe_exit` and `command_start`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn gate() -> super::Gate {
    let word: u64;
    // SAFETY: reads the gate's first eight bytes, defined above; the kernel
    // and `set_recording` update them asynchronously, and the asm is not
    // `pure`, so every call reads them afresh.
    unsafe {
        core::arch::asm!(
            "mov {word}, qword ptr [rip + {sym}]",
            word = out(reg) word,
            sym = sym __ferrite_gate,
            options(nostack, preserves_flags, readonly),
        );
    }
    super::Gate::from_word(word)
}

#[cfg(not(target_arch = "x86_64"))]
static RECORDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The process-wide recording switch.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn recording_switch() -> &'static core::sync::atomic::AtomicBool {
    &RECORDING
}

/// The switch and the semaphores of `probe_enter`, `probe_exit` and
/// `command_start`, read one by one.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn gate() -> super::Gate {
    use super::Probe;
    super::Gate::from_parts(
        recording_switch().load(core::sync::atomic::Ordering::Relaxed),
        attached(Probe::ProbeEnter),
        attached(Probe::ProbeExit),
        attached(Probe::CommandStart),
    )
}

// The semaphores are weak symbols that `usdt` defines next to each probe
// site. Define them here too (same section, same weak binding, so the linker
// keeps one), so that they can be read before a probe of the same name has
// been emitted in this object, e.g. to decide at entry whether the exit probe
// will need a start time. On x86-64 the gate's four are defined with the
// gate (strongly, above) and only there: a weak definition of the same name
// earlier in the same assembly would make the gate's a redefinition.
macro_rules! weak_semaphore {
    ($sema:ident) => {
        core::arch::global_asm!(concat!(
            ".ifndef ",
            stringify!($sema),
            "\n",
            ".pushsection .probes, \"aw\", \"progbits\"\n",
            ".weak ",
            stringify!($sema),
            "\n",
            ".hidden ",
            stringify!($sema),
            "\n",
            stringify!($sema),
            ":\n",
            ".zero 2\n",
            ".type ",
            stringify!($sema),
            ", @object\n",
            ".size ",
            stringify!($sema),
            ", 2\n",
            ".popsection\n",
            ".endif\n",
        ));
    };
}

macro_rules! semaphores {
    (
        gate { $($gate_probe:ident => $gate_sema:ident),* $(,)? }
        others { $($probe:ident => $sema:ident),* $(,)? }
    ) => {
        $(weak_semaphore!($sema);)*

        #[cfg(not(target_arch = "x86_64"))]
        mod gate_semaphores {
            $(weak_semaphore!($gate_sema);)*
        }

        unsafe extern "C" {
            $(static $gate_sema: u16;)*
            $(static $sema: u16;)*
        }

        /// Whether a tracer is attached to `probe` right now.
        #[inline(always)]
        pub(crate) fn attached(probe: super::Probe) -> bool {
            match probe {
                $(super::Probe::$gate_probe => read_semaphore!($gate_sema),)*
                $(super::Probe::$probe => read_semaphore!($sema),)*
            }
        }
    };
}

/// Reads a semaphore. On x86-64 the load is RIP-relative through `sym`: a
/// plain `extern` static would be reached through the GOT (it might be
/// defined in another object), an extra load on every probed call.
#[cfg(target_arch = "x86_64")]
macro_rules! read_semaphore {
    ($sema:ident) => {{
        let value: u32;
        // SAFETY: reads the 2-byte semaphore defined above (or identically by
        // `usdt`); the kernel updates it asynchronously, and the asm is not
        // `pure`, so every call reads it afresh.
        unsafe {
            core::arch::asm!(
                "movzx {value:e}, word ptr [rip + {sema}]",
                value = out(reg) value,
                sema = sym $sema,
                options(nostack, preserves_flags, readonly),
            );
        }
        value != 0
    }};
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! read_semaphore {
    ($sema:ident) => {{
        // SAFETY: as above; a volatile read because the kernel updates it.
        unsafe { (&raw const $sema).read_volatile() != 0 }
    }};
}

semaphores! {
    gate {
        ProbeEnter => __usdt_sema_ferrite_probe_enter,
        ProbeExit => __usdt_sema_ferrite_probe_exit,
        CommandStart => __usdt_sema_ferrite_command_start,
        CommandEnd => __usdt_sema_ferrite_command_end,
    }
    others {
        StorageRead => __usdt_sema_ferrite_storage_read,
        StorageWrite => __usdt_sema_ferrite_storage_write,
        ReplicationSync => __usdt_sema_ferrite_replication_sync,
        ConnectionAccept => __usdt_sema_ferrite_connection_accept,
        ConnectionClose => __usdt_sema_ferrite_connection_close,
    }
}

/// Whether this build emits probes.
pub(crate) const EMITS_PROBES: bool = true;

// Each probe is fired behind `attached`, the RIP-relative semaphore read:
// `usdt`'s own check reads the same semaphore through the GOT, so it then only
// runs while a tracer is attached.

/// The command a probe reports: `command`, or for 0 (a call that is not a
/// command root) the thread's current command, read only when the probe fires.
#[inline(always)]
fn resolve(command: u64) -> u64 {
    if command == 0 {
        crate::core::command::current_raw()
    } else {
        command
    }
}

/// The address of a string or key, as the probes carry it.
#[inline(always)]
fn addr(p: *const u8) -> u64 {
    p as usize as u64
}

#[inline(always)]
pub(crate) fn probe_enter(site: *const u8, command: u64) {
    if attached(super::Probe::ProbeEnter) {
        ferrite::probe_enter!(|| (addr(site), resolve(command)));
    }
}

#[inline(always)]
pub(crate) fn probe_exit(site: *const u8, command: u64, elapsed_ns: u64, error: bool) {
    if attached(super::Probe::ProbeExit) {
        ferrite::probe_exit!(|| (addr(site), resolve(command), elapsed_ns, u8::from(error)));
    }
}

#[inline(always)]
pub(crate) fn command_start(command: u64, name: *const u8) {
    if attached(super::Probe::CommandStart) {
        ferrite::command_start!(|| (command, addr(name)));
    }
}

#[inline(always)]
pub(crate) fn command_end(command: u64, name: *const u8, elapsed_ns: u64, error: bool) {
    if attached(super::Probe::CommandEnd) {
        ferrite::command_end!(|| (command, addr(name), elapsed_ns, u8::from(error)));
    }
}

#[inline(always)]
pub(crate) fn storage_read(command: u64, key: &[u8], bytes: u64, latency_ns: u64) {
    if attached(super::Probe::StorageRead) {
        ferrite::storage_read!(|| (
            command,
            addr(key.as_ptr()),
            key.len() as u64,
            bytes,
            latency_ns
        ));
    }
}

#[inline(always)]
pub(crate) fn storage_write(command: u64, key: &[u8], bytes: u64, latency_ns: u64) {
    if attached(super::Probe::StorageWrite) {
        ferrite::storage_write!(|| (
            command,
            addr(key.as_ptr()),
            key.len() as u64,
            bytes,
            latency_ns
        ));
    }
}

#[inline(always)]
pub(crate) fn replication_sync(replica: u64, offset: u64, bytes: u64, latency_ns: u64) {
    if attached(super::Probe::ReplicationSync) {
        ferrite::replication_sync!(|| (replica, offset, bytes, latency_ns));
    }
}

#[inline(always)]
pub(crate) fn connection_accept(connection: u64, fd: i64) {
    if attached(super::Probe::ConnectionAccept) {
        ferrite::connection_accept!(|| (connection, fd));
    }
}

#[inline(always)]
pub(crate) fn connection_close(connection: u64, commands: u64, lifetime_ns: u64) {
    if attached(super::Probe::ConnectionClose) {
        ferrite::connection_close!(|| (connection, commands, lifetime_ns));
    }
}
