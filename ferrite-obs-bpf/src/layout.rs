//! Rust mirrors of `bpf/ferrite_obs.h`. Field for field, padding included;
//! `tests/layout.rs` checks sizes and offsets against the C compiler's.

/// Bits of a slot-table index: a table has `1 << SLOT_BITS` entries.
pub const SLOT_BITS: u32 = 10;
/// Entries in a thread's slot table.
pub const SLOTS: usize = 1 << SLOT_BITS;
/// Bits of a `commands` index: the array has `1 << COMMAND_BITS` entries.
pub const COMMAND_BITS: u32 = 16;
/// Entries of the `commands` array: command `c` has entry `c & (COMMAND_SLOTS - 1)`.
pub const COMMAND_SLOTS: usize = 1 << COMMAND_BITS;
/// `FO_INFLIGHT_SHIFT`: a request's `inflight_table` entry is
/// `(req >> INFLIGHT_SHIFT) & inflight_mask` (kernel requests are 256-byte
/// aligned).
pub const INFLIGHT_SHIFT: u32 = 8;
/// Log2 latency buckets per [`IoStats`].
pub const LOG2_BUCKETS: usize = 40;

/// One entry of a thread's slot table: the command that pushed the SQE
/// carrying `user_data` (`struct fo_slot`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The SQE's `user_data`; the entry describes that SQE only.
    pub user_data: u64,
    /// The command id; 0 when pushed outside any command.
    pub command: u64,
    /// Increases with every slot the thread writes (see the header).
    pub seq: u64,
    /// The command's kind (its site index + 1); 0 for none.
    pub kind: u32,
    /// The load of the programs the slot was written under.
    pub generation: u32,
}

/// A thread's current command (`struct fo_current`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// The command id, 0 when none.
    pub command: u64,
    /// The command's kind, 0 when none.
    pub kind: u64,
}

/// Value of the `threads` map (`struct fo_thread`), keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadRegistration {
    /// Index + 1 of the thread's table in the `slots` array, or 0.
    pub table: u64,
    /// Address of the thread's [`Current`], or 0.
    pub current: u64,
    /// `seq` of the last slot the programs read for this thread; a
    /// registration writes 0.
    pub last_seq: u64,
    /// The thread's switch-out inside a command's poll, pending until its
    /// next switch-in; a registration writes 0.
    pub switched: SwitchOut,
}

/// A pending switch-out (`struct fo_switch`), in a thread's registration.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchOut {
    /// `bpf_ktime_get_ns()` at the switch-out.
    pub at_ns: u64,
    /// The command whose poll was switched out; 0: none pending.
    pub command: u64,
    /// Its kind.
    pub kind: u32,
    /// Whether the thread was sleeping (1) or preempted (0).
    pub blocked: u32,
}

/// Bits of a `registrations` index.
pub const REGISTRATION_BITS: u32 = 12;
/// Entries of the `registrations` array: thread `t` may own entry
/// `t & (REGISTRATIONS - 1)`.
pub const REGISTRATIONS: usize = 1 << REGISTRATION_BITS;

/// An entry of the `registrations` array (`struct fo_registration`), which
/// the host maps into its memory: a thread's registration, direct-mapped by
/// thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The registration.
    pub thread: ThreadRegistration,
    /// The thread that owns the entry; 0: free.
    pub tid: u32,
    /// Padding.
    pub _pad: u32,
}

/// Value of the `inflight` map (`struct fo_inflight`), keyed by the kernel's
/// request address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// The kernel request's address (in `inflight_table`, 0: a free entry).
    pub req: u64,
    /// The command id; 0 for an unattributed request.
    pub command: u64,
    /// `bpf_ktime_get_ns()` at submission.
    pub submit_ns: u64,
    /// The ring's kernel address.
    pub ctx: u64,
    /// The command's kind.
    pub kind: u32,
    /// The submitting thread.
    pub tid: u32,
    /// The io_uring opcode.
    pub opcode: u8,
    /// Whether the request was handed to an io-wq worker.
    pub punted: u8,
    /// Padding.
    pub _pad: [u8; 6],
}

/// Key of the `io_stats` map (`struct fo_io_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoKey {
    /// The command kind; 0 for unattributed requests.
    pub kind: u32,
    /// The io_uring opcode.
    pub opcode: u32,
}

/// Value of the per-CPU `io_stats` map (`struct fo_io_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoStats {
    /// Completed requests.
    pub ops: u64,
    /// Completions with a negative result.
    pub errors: u64,
    /// Bytes moved (positive results of data-moving opcodes).
    pub bytes: u64,
    /// Requests handed to an io-wq worker.
    pub punts: u64,
    /// Sum of submit-to-complete latencies.
    pub latency_ns: u64,
    /// `buckets[i]`: latencies in `[2^i, 2^(i+1))` ns; the last is open.
    pub buckets: [u64; LOG2_BUCKETS],
}

impl Default for IoStats {
    fn default() -> Self {
        IoStats {
            ops: 0,
            errors: 0,
            bytes: 0,
            punts: 0,
            latency_ns: 0,
            buckets: [0; LOG2_BUCKETS],
        }
    }
}

impl IoStats {
    /// Adds `other` (another CPU's figures) to `self`.
    pub fn add(&mut self, other: &IoStats) {
        self.ops = self.ops.wrapping_add(other.ops);
        self.errors = self.errors.wrapping_add(other.errors);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.punts = self.punts.wrapping_add(other.punts);
        self.latency_ns = self.latency_ns.wrapping_add(other.latency_ns);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.wrapping_add(*theirs);
        }
    }
}

/// Bits of an `io_table` index.
pub const IO_TABLE_BITS: u32 = 8;
/// Entries of the per-CPU `io_table` array.
pub const IO_TABLE: usize = 1 << IO_TABLE_BITS;

/// An entry of the per-CPU `io_table` array (`struct fo_io_entry`): the
/// figures of the key that claimed it on that CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEntry {
    /// 0 while free, else the key that claimed the entry (see
    /// [`IoEntry::key`]), written with one 8-byte store.
    pub tag: u64,
    /// The figures.
    pub stats: IoStats,
}

impl IoEntry {
    /// The key that claimed the entry, or `None` while it is free.
    pub fn key(&self) -> Option<IoKey> {
        (self.tag & 1 != 0).then_some(IoKey {
            kind: (self.tag >> 32) as u32,
            opcode: ((self.tag >> 8) & 0xff) as u32,
        })
    }
}

impl IoKey {
    /// The tag of an `io_table` entry this key holds (`fo_io_tag`); the
    /// programs see opcodes as bytes.
    pub fn tag(&self) -> u64 {
        (u64::from(self.kind) << 32) | (u64::from(self.opcode & 0xff) << 8) | 1
    }
}

/// The value of the `io_used` array (`struct fo_io_used`): bit `i` set
/// when `io_table` entry `i` is claimed on some CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoUsed {
    /// One bit per entry, entry `i` in word `i / 64`.
    pub bits: [u64; IO_TABLE / 64],
}

impl IoUsed {
    /// Every entry claimed, for a reader that could not read the bits.
    pub fn all() -> IoUsed {
        IoUsed {
            bits: [u64::MAX; IO_TABLE / 64],
        }
    }

    /// The claimed entries, ascending.
    pub fn entries(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(word, &bits)| {
            (0..64u32)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| word as u32 * 64 + bit)
        })
    }
}

/// Value of the per-CPU `offcpu` map (`struct fo_offcpu`), keyed by kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpu {
    /// Time switched out sleeping (blocking).
    pub blocked_ns: u64,
    /// Time switched out runnable (run-queue delay).
    pub preempted_ns: u64,
    /// Switch-ins ending such a time.
    pub switches: u64,
    /// Blocked times longer than the blocking threshold.
    pub long_blocks: u64,
}

impl OffCpu {
    /// Adds `other` (another CPU's figures) to `self`.
    pub fn add(&mut self, other: &OffCpu) {
        self.blocked_ns = self.blocked_ns.wrapping_add(other.blocked_ns);
        self.preempted_ns = self.preempted_ns.wrapping_add(other.preempted_ns);
        self.switches = self.switches.wrapping_add(other.switches);
        self.long_blocks = self.long_blocks.wrapping_add(other.long_blocks);
    }
}

/// An entry of the `commands` array (`struct fo_command`), which the host
/// maps into its memory: the kernel figures of the command it names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandFigures {
    /// The command whose figures these are; 0: none.
    pub command: u64,
    /// io_uring requests of the command that completed.
    pub io_ops: u64,
    /// Sum of their latencies.
    pub io_ns: u64,
    /// Time its polls spent switched out sleeping.
    pub blocked_ns: u64,
    /// Time its polls spent switched out runnable.
    pub preempted_ns: u64,
}

/// Indices of the per-CPU `counters` array (`enum fo_counter`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Requests the process submitted.
    Submitted = 0,
    /// ... carrying a command.
    Attributed,
    /// ... with no command.
    Unattributed,
    /// ... whose slot held another `user_data`.
    SlotMismatch,
    /// Completions of tracked requests.
    Completed,
    /// Requests handed to io-wq.
    Punted,
    /// Submissions the kernel failed.
    Failed,
    /// Short writes.
    ShortWrites,
    /// Completions that overflowed the CQ ring.
    CqeOverflows,
    /// Ring-buffer records lost because the ring was full.
    EventsDropped,
    /// Failed reads of the process's tables.
    ReadFaults,
    /// Requests not tracked because the update failed.
    InflightFull,
    /// Completions or switches not aggregated because a map was full.
    StatsFull,
    /// Switch-outs inside a command's poll.
    SwitchOuts,
    /// ... matched by their switch-in.
    SwitchIns,
    /// Submissions whose slot was already used by an earlier SQE.
    StaleSlots,
    /// Figures of a command whose `commands` entry was no longer its own.
    CommandMisses,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::Submitted,
        Counter::Attributed,
        Counter::Unattributed,
        Counter::SlotMismatch,
        Counter::Completed,
        Counter::Punted,
        Counter::Failed,
        Counter::ShortWrites,
        Counter::CqeOverflows,
        Counter::EventsDropped,
        Counter::ReadFaults,
        Counter::InflightFull,
        Counter::StatsFull,
        Counter::SwitchOuts,
        Counter::SwitchIns,
        Counter::StaleSlots,
        Counter::CommandMisses,
    ];
}

/// Entries of the `counters` array (`FO_C_COUNT`).
pub const COUNTERS: usize = 17;

/// What a ring-buffer record reports (`enum fo_event_type`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// A completion slower than the slow threshold.
    SlowIo = 1,
    /// A completion with a negative result.
    FailedIo = 2,
    /// A command's poll blocked its thread longer than the threshold.
    BlockedPoll = 3,
}

/// A ring-buffer record (`struct fo_event`), as it arrives: decode it with
/// [`Event::decode`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// An [`EventType`] value.
    pub kind_of_event: u32,
    /// The thread.
    pub tid: u32,
    /// The command id (0: unattributed).
    pub command: u64,
    /// The completion's latency, or the time blocked.
    pub duration_ns: u64,
    /// The request's `user_data` (0 for a blocked poll).
    pub user_data: u64,
    /// The command's kind.
    pub kind: u32,
    /// The completion's result (0 for a blocked poll).
    pub res: i32,
    /// The opcode (0 for a blocked poll).
    pub opcode: u32,
    /// Padding.
    pub _pad: u32,
}

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub what: EventType,
    /// The record's fields.
    pub raw: RawEvent,
}

/// Why bytes from the ring buffer are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record has the wrong size.
    Size {
        /// Its size.
        got: usize,
        /// The size of `struct fo_event`.
        expected: usize,
    },
    /// The type field holds no known [`EventType`].
    Type {
        /// The value found.
        value: u32,
    },
    /// Padding that must be zero is not.
    Padding,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Size { got, expected } => write!(
                f,
                "ring-buffer record of {got} bytes, expected {expected}: the loaded program \
                 and this build disagree on struct fo_event"
            ),
            DecodeError::Type { value } => write!(
                f,
                "ring-buffer record of unknown type {value} (known: 1 slow io, 2 failed io, \
                 3 blocked poll)"
            ),
            DecodeError::Padding => write!(f, "ring-buffer record with non-zero padding"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl Event {
    /// Decodes one ring-buffer record; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        const SIZE: usize = core::mem::size_of::<RawEvent>();
        let bytes: &[u8; SIZE] = bytes.try_into().map_err(|_| DecodeError::Size {
            got: bytes.len(),
            expected: SIZE,
        })?;
        let u32_at = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let u64_at = |at: usize| {
            if cfg!(target_endian = "little") {
                u64_at(at)
            } else {
                (u64_at(at) << 32) | (u64_at(at) >> 32)
            }
        };
        let raw = RawEvent {
            kind_of_event: u32_at(0),
            tid: u32_at(4),
            command: u64_at(8),
            duration_ns: u64_at(16),
            user_data: u64_at(24),
            kind: u32_at(32),
            res: u32_at(36) as i32,
            opcode: u32_at(40),
            _pad: u32_at(44),
        };
        let what = match raw.kind_of_event {
            1 => EventType::SlowIo,
            2 => EventType::FailedIo,
            3 => EventType::BlockedPoll,
            value => return Err(DecodeError::Type { value }),
        };
        if raw._pad != 0 {
            return Err(DecodeError::Padding);
        }
        Ok(Event { what, raw })
    }
}

#[cfg(feature = "aya")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: `#[repr(C)]`, only integer fields, padding explicit:
            // every bit pattern is a valid value and there are no holes.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        Slot,
        Current,
        ThreadRegistration,
        Registration,
        Inflight,
        IoKey,
        IoStats,
        IoEntry,
        IoUsed,
        OffCpu,
        CommandFigures,
        SwitchOut,
        RawEvent
    );
}
