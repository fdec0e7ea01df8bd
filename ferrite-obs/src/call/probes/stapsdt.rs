//! SystemTap (stapsdt v3) probes: a `nop` and an ELF note per call site,
//! gated by a 16-bit semaphore that the kernel raises while a tracer is
//! attached. Arguments are computed only while it is raised.
//!
//! # Symbols
//!
//! The semaphores, and the recording switch beside them, are the only global
//! symbols this crate defines (with `_.stapsdt.base`, which every stapsdt
//! object shares), and every copy of it in a binary shares them:
//! two libraries on semver-incompatible versions of ferrite-obs (0.1 and
//! 0.2, say) bring two copies into one binary. Tracers raise one semaphore
//! per probe name (bcc and bpftrace take the first note's), so all sites of a
//! probe, whichever copy emitted them, must be gated by the same one. Each
//! is therefore defined weak and hidden, in a COMDAT group of its own name,
//! and skipped where the same assembly already defines it (fat LTO): the
//! linker keeps one definition, and every copy's reads and notes resolve to
//! it. The gate's name carries the version of its layout (the table
//! below), never the crate's: copies whose layouts differ must not share it,
//! so any change to the layout renames it. The stand-alone semaphores are
//! plain stapsdt counters, named by their probe.

use core::sync::atomic::AtomicBool;

/// The assembly that defines the weak, hidden object `{$operand}` of `$size`
/// zeroed bytes at the current position.
#[rustfmt::skip]
macro_rules! object {
    ($operand:ident, $size:literal) => {
        concat!(
            ".weak {", stringify!($operand), "}\n",
            ".hidden {", stringify!($operand), "}\n",
            ".type {", stringify!($operand), "}, @object\n",
            ".size {", stringify!($operand), "}, ", stringify!($size), "\n",
            "{", stringify!($operand), "}:\n",
            ".zero ", stringify!($size),
        )
    };
}

/// Opens the definition of `{$operand}`: in `.probes`, in the COMDAT group of
/// its name, and only if the assembly has not defined it yet (fat LTO
/// assembles every crate's `global_asm!` as one). Closed by `.popsection`
/// and `.endif`.
#[rustfmt::skip]
macro_rules! group {
    ($operand:ident) => {
        concat!(
            ".ifndef {", stringify!($operand), "}\n",
            ".pushsection .probes, \"awG\", \"progbits\", {", stringify!($operand), "}, comdat",
        )
    };
}

/// Reads a semaphore. On x86-64 the load is RIP-relative through `sym`: a
/// plain `extern` static would be reached through the GOT (it might be
/// defined in another object), an extra load on every probed call.
#[cfg(target_arch = "x86_64")]
macro_rules! read_semaphore {
    ($sema:ident) => {{
        let value: u32;
        // SAFETY: reads the 2-byte semaphore defined below; the kernel
        // updates it asynchronously, and the asm is not `pure`, so every call
        // reads it afresh.
        unsafe {
            core::arch::asm!(
                "movzx {value:e}, word ptr [rip + {sema}]",
                value = out(reg) value,
                sema = sym semaphore::$sema,
                options(nostack, preserves_flags, readonly),
            );
        }
        value != 0
    }};
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! read_semaphore {
    ($sema:ident) => {{
        // SAFETY: reads the 2-byte semaphore defined below, volatile because
        // the kernel updates it.
        unsafe { (&raw const semaphore::$sema).read_volatile() != 0 }
    }};
}

// The gate: the recording switch and the semaphores of the probes that a
// `#[probe]` call fires, side by side in one 16-byte block, so that an
// inactive plain call tests them with one load (see `gate`). Layout 1:
//
// | offset | what |
// |---|---|
// | 0 | the recording switch (`crate::call::recording::set_recording`), a byte, and a spare byte that stays zero |
// | 2 | `probe_enter`'s semaphore |
// | 4 | `probe_exit`'s semaphore |
// | 6 | `command_start`'s semaphore |
// | 8 | `command_end`'s semaphore |
// | 10 | zero |
//
// They live in `.probes`, writable and file-backed (`progbits`), as the
// kernel requires of a semaphore: it raises one with a 16-bit
// read-modify-write of its own two bytes, never touching its neighbours.
// Hidden: they are this binary's, never another shared object's, so code
// reaches them RIP-relative, without the GOT.
macro_rules! semaphores {
    (
        gate $gate:literal { $($gate_probe:ident => $gate_sema:ident),* $(,)? }
        others { $($probe:ident => $sema:ident),* $(,)? }
    ) => {
        unsafe extern "C" {
            /// The gate's first eight bytes; its first byte is the recording
            /// switch.
            #[link_name = $gate]
            static GATE: AtomicBool;
        }

        /// Each probe's semaphore, named as the probe.
        mod semaphore {
            unsafe extern "C" {
                $(
                    #[link_name = concat!($gate, "_", stringify!($gate_sema))]
                    pub(super) static $gate_sema: u16;
                )*
                $(
                    #[link_name = concat!("__ferrite_obs_sema_", stringify!($sema))]
                    pub(super) static $sema: u16;
                )*
            }
        }

        core::arch::global_asm!(
            group!(gate),
            ".balign 16",
            ".weak {gate}",
            ".hidden {gate}",
            ".type {gate}, @object",
            ".size {gate}, 16",
            "{gate}:",
            ".zero 2",
            $(object!($gate_sema, 2),)*
            ".zero 6",
            ".popsection",
            ".endif",
            $(group!($sema), ".balign 2", object!($sema, 2), ".popsection", ".endif",)*
            gate = sym GATE,
            $($gate_sema = sym semaphore::$gate_sema,)*
            $($sema = sym semaphore::$sema,)*
        );

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

semaphores! {
    gate "__ferrite_obs_gate_v1" {
        ProbeEnter => probe_enter,
        ProbeExit => probe_exit,
        CommandStart => command_start,
        CommandEnd => command_end,
    }
    others {
        StorageRead => storage_read,
        StorageWrite => storage_write,
        ReplicationSync => replication_sync,
        ConnectionAccept => connection_accept,
        ConnectionClose => connection_close,
    }
}

/// The process-wide recording switch, in the gate: shared by every copy of
/// this crate in the binary, as the gate is.
#[inline(always)]
pub(crate) fn recording_switch() -> &'static AtomicBool {
    // SAFETY: `GATE` is defined above: 16 writable, zeroed bytes, 16-byte
    // aligned, of which this is the first (a valid `false`); only this
    // `AtomicBool`, in whichever copy of the crate, writes that byte.
    unsafe { &GATE }
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
            "mov {word}, qword ptr [rip + {gate}]",
            word = out(reg) word,
            gate = sym GATE,
            options(nostack, preserves_flags, readonly),
        );
    }
    super::Gate::from_word(word)
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

/// Fires probe `$probe`: a `nop`, where an attached tracer stops, and the
/// stapsdt note that tells the tracer where the site is, which semaphore
/// gates it, and where each argument is: `$size@REG`, `REG` being the
/// register the compiler picked for it (a `u64` each, of which the tracer
/// takes `$size` bytes, negative for signed).
///
/// The note's fields, in order: the site's address, the link-time address of
/// `.stapsdt.base` (from which a tracer detects that the binary was
/// prelinked), the semaphore's address, then provider, probe and arguments
/// as strings. `_.stapsdt.base` is defined once per object, weak, in a
/// comdat section, so every object and every copy of this crate share one.
macro_rules! fire {
    ($probe:ident: $size0:literal $arg0:ident $(, $size:literal $arg:ident)* $(,)?) => {
        // SAFETY: a `nop`, and data in sections of their own that no code
        // reads; the operands only name the argument registers and the
        // semaphore for the note.
        unsafe {
            probe_asm!(
                "990: nop",
                ".pushsection .note.stapsdt, \"\", \"note\"",
                ".balign 4",
                ".4byte 992f-991f, 994f-993f, 3",
                "991: .asciz \"stapsdt\"",
                "992: .balign 4",
                "993: .8byte 990b",
                ".8byte _.stapsdt.base",
                ".8byte {sema}",
                ".asciz \"ferrite\"",
                concat!(".asciz \"", stringify!($probe), "\""),
                concat!(
                    ".asciz \"",
                    stringify!($size0), "@{", stringify!($arg0), "}",
                    $(" ", stringify!($size), "@{", stringify!($arg), "}",)*
                    "\"",
                ),
                "994: .balign 4",
                ".popsection",
                ".ifndef _.stapsdt.base",
                ".pushsection .stapsdt.base, \"aGR\", \"progbits\", .stapsdt.base, comdat",
                ".weak _.stapsdt.base",
                ".hidden _.stapsdt.base",
                "_.stapsdt.base: .space 1",
                ".size _.stapsdt.base, 1",
                ".popsection",
                ".endif",
                sema = sym semaphore::$probe,
                $arg0 = in(reg) $arg0,
                $($arg = in(reg) $arg,)*
            );
        }
    };
}

/// `asm!` with the options of a probe site: `readonly`, not `nomem`, because
/// the tracer reads memory (names, keys) at the `nop`, so stores before it
/// must have happened. On x86-64 in AT&T syntax, in which an operand prints
/// as the stapsdt notes spell registers (`%rdi`).
#[cfg(target_arch = "x86_64")]
macro_rules! probe_asm {
    ($($body:tt)*) => {
        core::arch::asm!($($body)* options(att_syntax, readonly, nostack, preserves_flags))
    };
}

/// `asm!` with the options of a probe site (see the x86-64 one).
#[cfg(not(target_arch = "x86_64"))]
macro_rules! probe_asm {
    ($($body:tt)*) => {
        core::arch::asm!($($body)* options(readonly, nostack, preserves_flags))
    };
}

/// Whether this build emits probes.
pub(crate) const EMITS_PROBES: bool = true;

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

// Strings and keys travel as their address in a u64 (`8@%rsi`), which
// tracers read with `str()`.

/// The address of a string or key, as the probes carry it.
#[inline(always)]
fn addr(p: *const u8) -> u64 {
    p as usize as u64
}

#[inline(always)]
pub(crate) fn probe_enter(site: *const u8, command: u64) {
    if attached(super::Probe::ProbeEnter) {
        let (site, command) = (addr(site), resolve(command));
        fire!(probe_enter: 8 site, 8 command);
    }
}

#[inline(always)]
pub(crate) fn probe_exit(site: *const u8, command: u64, elapsed_ns: u64, error: bool) {
    if attached(super::Probe::ProbeExit) {
        let (site, command, error) = (addr(site), resolve(command), u64::from(error));
        fire!(probe_exit: 8 site, 8 command, 8 elapsed_ns, 1 error);
    }
}

#[inline(always)]
pub(crate) fn command_start(command: u64, name: *const u8) {
    if attached(super::Probe::CommandStart) {
        let name = addr(name);
        fire!(command_start: 8 command, 8 name);
    }
}

#[inline(always)]
pub(crate) fn command_end(command: u64, name: *const u8, elapsed_ns: u64, error: bool) {
    if attached(super::Probe::CommandEnd) {
        let (name, error) = (addr(name), u64::from(error));
        fire!(command_end: 8 command, 8 name, 8 elapsed_ns, 1 error);
    }
}

#[inline(always)]
pub(crate) fn storage_read(command: u64, key: &[u8], bytes: u64, latency_ns: u64) {
    if attached(super::Probe::StorageRead) {
        let (key, key_len) = (addr(key.as_ptr()), key.len() as u64);
        fire!(storage_read: 8 command, 8 key, 8 key_len, 8 bytes, 8 latency_ns);
    }
}

#[inline(always)]
pub(crate) fn storage_write(command: u64, key: &[u8], bytes: u64, latency_ns: u64) {
    if attached(super::Probe::StorageWrite) {
        let (key, key_len) = (addr(key.as_ptr()), key.len() as u64);
        fire!(storage_write: 8 command, 8 key, 8 key_len, 8 bytes, 8 latency_ns);
    }
}

#[inline(always)]
pub(crate) fn replication_sync(replica: u64, offset: u64, bytes: u64, latency_ns: u64) {
    if attached(super::Probe::ReplicationSync) {
        fire!(replication_sync: 8 replica, 8 offset, 8 bytes, 8 latency_ns);
    }
}

#[inline(always)]
pub(crate) fn connection_accept(connection: u64, fd: i64) {
    if attached(super::Probe::ConnectionAccept) {
        let fd = fd as u64;
        fire!(connection_accept: 8 connection, -8 fd);
    }
}

#[inline(always)]
pub(crate) fn connection_close(connection: u64, commands: u64, lifetime_ns: u64) {
    if attached(super::Probe::ConnectionClose) {
        fire!(connection_close: 8 connection, 8 commands, 8 lifetime_ns);
    }
}
