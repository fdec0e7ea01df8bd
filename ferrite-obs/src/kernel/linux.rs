//! The kernel view on Linux: loads `ferrite-obs-bpf`'s programs with aya,
//! attaches them, reads their maps at every rollup and detaches them at
//! shutdown.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error as StdError;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use ferrite_obs_bpf::{
    Counter, Event, EventType, IoEntry, IoKey, IoStats, IoUsed, OffCpu, SLOTS, opcode_name,
};

use super::{
    IoFigures, KernelCounters, KernelEvent, KernelEventKind, KernelSnapshot, KernelStatus,
    LoadStep, OffCpuFigures, RECENT_EVENTS,
};
use crate::config::Config;

/// Where a program attaches.
#[derive(Clone, Copy)]
enum Hook {
    /// A BTF tracepoint (`tp_btf`): the kernel's own arguments, no record
    /// formatted; for the programs that run on every request or switch.
    Btf(&'static str),
    /// A classic tracepoint (category, name), reading the formatted record.
    Classic(&'static str, &'static str),
}

impl Hook {
    fn describe(self) -> String {
        match self {
            Hook::Btf(name) => format!("tp_btf/{name}"),
            Hook::Classic(category, name) => format!("{category}/{name}"),
        }
    }
}

/// Every program and where it attaches.
const PROGRAMS: [(&str, Hook); 7] = [
    ("fo_submit", Hook::Btf("io_uring_submit_req")),
    ("fo_complete", Hook::Btf("io_uring_complete")),
    ("fo_switch", Hook::Btf("sched_switch")),
    (
        "fo_punt",
        Hook::Classic("io_uring", "io_uring_queue_async_work"),
    ),
    (
        "fo_failed",
        Hook::Classic("io_uring", "io_uring_req_failed"),
    ),
    (
        "fo_short_write",
        Hook::Classic("io_uring", "io_uring_short_write"),
    ),
    (
        "fo_cqe_overflow",
        Hook::Classic("io_uring", "io_uring_cqe_overflow"),
    ),
];

/// An attached program's link, detached at unload.
enum Link {
    Btf(BtfTracePointLinkId),
    Classic(TracePointLinkId),
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// The kernel view of this process: loaded, or why not.
#[derive(Debug)]
pub(crate) struct Kernel {
    status: KernelStatus,
    loaded: Option<Loaded>,
}

struct Loaded {
    /// The load's generation (see `threads`).
    generation: u32,
    ebpf: Ebpf,
    links: Vec<(&'static str, Link)>,
    io_table: PerCpuArray<MapData, IoEntry>,
    io_used: Array<MapData, IoUsed>,
    io_stats: PerCpuHashMap<MapData, IoKey, IoStats>,
    offcpu: PerCpuHashMap<MapData, u32, OffCpu>,
    counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    recent: VecDeque<KernelEvent>,
    events_received: u64,
    events_malformed: u64,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// A failed step: what it was, what was said, and what fixes it.
struct Failure {
    step: LoadStep,
    error: String,
    fix: String,
}

impl Kernel {
    /// Loads and attaches the programs for this process, as `config` says.
    /// Never fails: a failure is the returned view's status.
    pub(crate) fn load(config: &Config) -> Kernel {
        if !config.ebpf.enabled {
            return Kernel {
                status: KernelStatus::Off,
                loaded: None,
            };
        }
        match load(config) {
            Ok(loaded) => Kernel {
                status: KernelStatus::Active {
                    attached: PROGRAMS.iter().map(|(_, hook)| hook.describe()).collect(),
                },
                loaded: Some(loaded),
            },
            Err(Failure { step, error, fix }) => Kernel {
                status: KernelStatus::Degraded { step, error, fix },
                loaded: None,
            },
        }
    }

    pub(crate) fn status(&self) -> KernelStatus {
        self.status.clone()
    }

    /// Everything measured so far; `None` when not loaded. `name` maps a
    /// command kind to its probe name.
    pub(crate) fn read(
        &mut self,
        name: &dyn Fn(u32) -> Option<&'static str>,
    ) -> Option<KernelSnapshot> {
        let loaded = self.loaded.as_mut()?;
        loaded.drain_events(name);
        Some(KernelSnapshot {
            counters: loaded.counters(),
            io: loaded.io(name),
            off_cpu: loaded.off_cpu(name),
            recent_events: loaded.recent.iter().cloned().collect(),
            events_received: loaded.events_received,
            events_malformed: loaded.events_malformed,
        })
    }

    /// Detaches every program and frees every map.
    pub(crate) fn unload(&mut self) {
        if let Some(mut loaded) = self.loaded.take() {
            super::threads::uninstall(loaded.generation);
            super::commands::retire(loaded.generation);
            for (program, link) in loaded.links.drain(..) {
                let Some(program) = loaded.ebpf.program_mut(program) else {
                    continue;
                };
                let _ = match link {
                    Link::Btf(link) => {
                        <&mut BtfTracePoint>::try_from(program).map(|p| p.detach(link))
                    }
                    Link::Classic(link) => {
                        <&mut TracePoint>::try_from(program).map(|p| p.detach(link))
                    }
                };
            }
            // Dropping the object unloads the programs and closes the maps.
            drop(loaded);
        }
        if self.status.is_active() {
            self.status = KernelStatus::Off;
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.unload();
    }
}

fn load(config: &Config) -> Result<Loaded, Failure> {
    ensure_tracefs()?;
    let tgid = std::process::id();
    let slow_io_ns = u64::try_from(config.slow_threshold.as_nanos()).unwrap_or(u64::MAX);
    let block_ns = u64::try_from(config.ebpf.blocking_threshold.as_nanos()).unwrap_or(u64::MAX);
    let generation = super::threads::reserve_generation();
    // The direct-mapped table takes the configured size rounded up to a power
    // of two; the LRU map behind it, for requests whose table entry is taken,
    // a quarter of it.
    let table_entries = config.ebpf.inflight_entries.next_power_of_two();
    let inflight_mask = table_entries - 1;
    let overflow_entries = (table_entries / 4).max(1024);
    let mut ebpf = EbpfLoader::new()
        .override_global("target_tgid", &tgid, true)
        .override_global("generation", &generation, true)
        .override_global("slow_io_ns", &slow_io_ns, true)
        .override_global("block_threshold_ns", &block_ns, true)
        .override_global("inflight_mask", &inflight_mask, true)
        .override_global("slot_tables", &config.ebpf.slot_tables, true)
        .map_max_entries("slots", config.ebpf.slot_tables * SLOTS as u32)
        .map_max_entries("inflight_table", table_entries)
        .map_max_entries("inflight", overflow_entries)
        .map_max_entries("io_stats", config.ebpf.histogram_entries)
        .map_max_entries("events", config.ebpf.ring_buffer_bytes)
        .load(ferrite_obs_bpf::object())
        .map_err(|e| failure(LoadStep::CreateMaps, &e))?;

    let btf = Btf::from_sys_fs().map_err(|e| Failure {
        step: LoadStep::LoadProgram,
        error: format!("reading the kernel's BTF: {e}"),
        fix: "the kernel view needs a kernel built with BTF (CONFIG_DEBUG_INFO_BTF=y, \
              /sys/kernel/btf/vmlinux)"
            .to_owned(),
    })?;
    for (program, hook) in PROGRAMS {
        let loaded = match hook {
            Hook::Btf(name) => program_mut::<BtfTracePoint>(&mut ebpf, program)?.load(name, &btf),
            Hook::Classic(..) => program_mut::<TracePoint>(&mut ebpf, program)?.load(),
        };
        loaded.map_err(|e| failure(LoadStep::LoadProgram, &e))?;
    }
    let mut links = Vec::with_capacity(PROGRAMS.len());
    for (program, hook) in PROGRAMS {
        let link = match hook {
            Hook::Btf(_) => program_mut::<BtfTracePoint>(&mut ebpf, program)?
                .attach()
                .map(Link::Btf),
            Hook::Classic(category, name) => program_mut::<TracePoint>(&mut ebpf, program)?
                .attach(category, name)
                .map(Link::Classic),
        };
        links.push((program, link.map_err(|e| failure(LoadStep::Attach, &e))?));
    }

    let commands = take(&mut ebpf, "commands")?;
    let commands = array(&commands, "commands")?;
    let slots = take(&mut ebpf, "slots")?;
    let slots = array(&slots, "slots")?;
    let registrations = take(&mut ebpf, "registrations")?;
    let registrations = array(&registrations, "registrations")?;
    let threads_map = take(&mut ebpf, "threads")?;
    let threads_fd = duplicate(&threads_map)?;
    let loaded = Loaded {
        generation,
        io_table: map(&mut ebpf, "io_table")?,
        io_used: map(&mut ebpf, "io_used")?,
        io_stats: map(&mut ebpf, "io_stats")?,
        offcpu: map(&mut ebpf, "offcpu")?,
        counters: map(&mut ebpf, "counters")?,
        events: map(&mut ebpf, "events")?,
        ebpf,
        links,
        recent: VecDeque::with_capacity(RECENT_EVENTS),
        events_received: 0,
        events_malformed: 0,
    };
    drop(threads_map);
    // The last steps that can fail: mapping the arrays the host shares.
    super::commands::install(commands.fd().as_fd(), generation)
        .map_err(|e| mapping_failure("the `commands` array", &e))?;
    let tables = config.ebpf.slot_tables;
    let installed = super::threads::install(
        threads_fd,
        generation,
        slots.fd().as_fd(),
        tables,
        registrations.fd().as_fd(),
    );
    if let Err(e) = installed {
        super::commands::retire(generation);
        return Err(mapping_failure(
            "the `slots` and `registrations` arrays",
            &e,
        ));
    }
    Ok(loaded)
}

/// A step failed because the embedded object is not what this runtime
/// expects.
fn object_mismatch(step: LoadStep, error: String) -> Failure {
    Failure {
        step,
        error,
        fix: "rebuild ferrite-obs-bpf: the object and this runtime disagree".to_owned(),
    }
}

/// Map `name` as the array it is declared as.
fn array<'a>(map: &'a aya::maps::Map, name: &str) -> Result<&'a MapData, Failure> {
    match map {
        aya::maps::Map::Array(data) => Ok(data),
        _ => Err(object_mismatch(
            LoadStep::CreateMaps,
            format!("map `{name}` is not an array"),
        )),
    }
}

fn mapping_failure(what: &str, error: &io::Error) -> Failure {
    Failure {
        step: LoadStep::CreateMaps,
        error: format!("mapping {what} into memory: {error}"),
        fix: "the kernel view needs BPF_F_MMAPABLE arrays (Linux 5.5 or later)".to_owned(),
    }
}

/// The object's program `program`, of type `P`.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut P, Failure>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(program)
        .and_then(|p| <&mut P>::try_from(p).ok())
        .ok_or_else(|| {
            object_mismatch(
                LoadStep::LoadProgram,
                format!(
                    "the embedded object has no program `{program}` of type {}",
                    std::any::type_name::<P>()
                ),
            )
        })
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, Failure> {
    ebpf.take_map(name).ok_or_else(|| {
        object_mismatch(
            LoadStep::CreateMaps,
            format!("the embedded object has no map `{name}`"),
        )
    })
}

fn map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Failure>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    T::try_from(take(ebpf, name)?).map_err(|e| failure(LoadStep::CreateMaps, &e))
}

/// A descriptor of the `threads` map of its own, for thread registration.
fn duplicate(map: &aya::maps::Map) -> Result<OwnedFd, Failure> {
    let aya::maps::Map::HashMap(data) = map else {
        return Err(object_mismatch(
            LoadStep::CreateMaps,
            "map `threads` is not a hash".to_owned(),
        ));
    };
    data.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| failure(LoadStep::CreateMaps, &e))
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted.
fn ensure_tracefs() -> Result<(), Failure> {
    let mounted = |path: &str| Path::new(path).join("events").is_dir();
    if mounted(TRACEFS) || mounted("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    match std::fs::read_dir(TRACEFS) {
        // Unreadable: the attach step names the missing capability.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure {
                step: LoadStep::Tracefs,
                error: format!("{TRACEFS} does not exist"),
                fix: "the kernel needs CONFIG_TRACING (tracefs) for tracepoints".to_owned(),
            });
        }
        _ => {}
    }
    let mount = c"/sys/kernel/tracing";
    let fs = c"tracefs";
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let result = unsafe {
        libc::mount(
            fs.as_ptr(),
            mount.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result == 0 && mounted(TRACEFS) {
        return Ok(());
    }
    Err(Failure {
        step: LoadStep::Tracefs,
        error: format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed: {}",
            io::Error::last_os_error()
        ),
        fix: format!(
            "mount it (`mount -t tracefs tracefs {TRACEFS}`), or give the server CAP_SYS_ADMIN to mount it itself"
        ),
    })
}

/// A load error's message, at most about 2,000 bytes: the verifier log can
/// run to thousands of lines, so keep its start (the failed call) and its
/// end, where the verifier says what it rejected.
fn abridge(message: String) -> String {
    const HEAD: usize = 400;
    const TAIL: usize = 1600;
    if message.len() <= HEAD + TAIL {
        return message;
    }
    let mut head = HEAD;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - TAIL;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} ... {}", &message[..head], &message[tail..])
}

/// A failed step, with the fix that the error and the process's
/// capabilities point to.
fn failure(step: LoadStep, error: &(dyn StdError + 'static)) -> Failure {
    let mut message = error.to_string();
    let mut errno = None;
    let mut source = error.source();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        cause = e.source();
    }
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    let message = abridge(message);
    let missing = missing_capabilities();
    let grant = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "; this process lacks {}: run as root, or grant them (`setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep BINARY`, or AmbientCapabilities= in a systemd unit)",
            missing.join(", ")
        )
    };
    let permission = matches!(errno, Some(libc::EPERM | libc::EACCES));
    let fix = match step {
        LoadStep::CreateMaps if permission => {
            format!("creating BPF maps needs CAP_BPF (kernel.unprivileged_bpf_disabled forbids it otherwise){grant}")
        }
        LoadStep::LoadProgram if permission => {
            format!("loading tracing programs needs CAP_PERFMON and CAP_BPF{grant}")
        }
        LoadStep::Attach if permission || message.contains("tracefs") => {
            format!("attaching to tracepoints needs read access to tracefs ({TRACEFS}): CAP_DAC_READ_SEARCH{grant}")
        }
        LoadStep::Attach if errno == Some(libc::ENOENT) => {
            "this kernel lacks one of the tracepoints (io_uring tracepoints need Linux 5.5 or later, built with CONFIG_IO_URING)".to_owned()
        }
        LoadStep::CreateMaps | LoadStep::LoadProgram => format!(
            "the kernel rejected the programs: they need Linux 5.8 or later with BTF (/sys/kernel/btf/vmlinux) and ring buffers, and io_uring tracepoints with the arguments they read (io_uring_complete passing its CQE, as Linux 6.18 does){grant}"
        ),
        _ => format!("see the error{grant}"),
    };
    Failure {
        step,
        error: message,
        fix,
    }
}

/// The capabilities the kernel view needs that this process lacks.
fn missing_capabilities() -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 3] = [
        (39, "CAP_BPF"),
        (38, "CAP_PERFMON"),
        (2, "CAP_DAC_READ_SEARCH"),
    ];
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    NEEDED
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

impl Loaded {
    /// Runs of the programs the kernel skipped: a program never runs nested
    /// on one CPU, so a tracepoint that fires while it runs there (a
    /// completion in an interrupt during a submission, say) goes unseen.
    fn runs_skipped(&self) -> u64 {
        PROGRAMS
            .iter()
            .filter_map(|(name, _)| self.ebpf.program(name)?.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd()))
            .fold(0, u64::wrapping_add)
    }

    fn counters(&self) -> KernelCounters {
        let sum = |counter: Counter| -> u64 {
            self.counters
                .get(&(counter as u32), 0)
                .map(|values| values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
                .unwrap_or(0)
        };
        KernelCounters {
            submitted: sum(Counter::Submitted),
            attributed: sum(Counter::Attributed),
            unattributed: sum(Counter::Unattributed),
            slot_mismatches: sum(Counter::SlotMismatch),
            stale_slots: sum(Counter::StaleSlots),
            completed: sum(Counter::Completed),
            punted: sum(Counter::Punted),
            failed: sum(Counter::Failed),
            short_writes: sum(Counter::ShortWrites),
            cqe_overflows: sum(Counter::CqeOverflows),
            events_dropped: sum(Counter::EventsDropped),
            read_faults: sum(Counter::ReadFaults),
            inflight_full: sum(Counter::InflightFull),
            stats_full: sum(Counter::StatsFull),
            switch_outs: sum(Counter::SwitchOuts),
            switch_ins: sum(Counter::SwitchIns),
            command_misses: sum(Counter::CommandMisses),
            threads_without_slot_table: super::threads::refused(),
            runs_skipped: self.runs_skipped(),
        }
    }

    /// Every key's io figures, summed over the CPUs: the `io_table` entries
    /// claimed on some CPU (each CPU's copy holds the key that claimed it
    /// there) and the `io_stats` hash behind them.
    fn io_totals(&self) -> BTreeMap<IoKey, IoStats> {
        let mut totals: BTreeMap<IoKey, IoStats> = BTreeMap::new();
        // Unreadable bits: look at every entry rather than miss some.
        let used = self.io_used.get(&0, 0).unwrap_or_else(|_| IoUsed::all());
        for index in used.entries() {
            let Ok(per_cpu) = self.io_table.get(&index, 0) else {
                continue;
            };
            for entry in per_cpu.iter() {
                if let Some(key) = entry.key() {
                    totals.entry(key).or_default().add(&entry.stats);
                }
            }
        }
        for (key, total) in fold(&self.io_stats, IoStats::add) {
            totals.entry(key).or_default().add(&total);
        }
        totals
    }

    fn io(&self, name: &dyn Fn(u32) -> Option<&'static str>) -> Vec<IoFigures> {
        let mut io: Vec<IoFigures> = self
            .io_totals()
            .into_iter()
            .map(|(key, total)| IoFigures {
                command: if key.kind == 0 { None } else { name(key.kind) },
                opcode: key.opcode,
                opcode_name: opcode_label(key.opcode),
                ops: total.ops,
                errors: total.errors,
                bytes: total.bytes,
                punts: total.punts,
                latency_sum: Duration::from_nanos(total.latency_ns),
                buckets: total.buckets.to_vec(),
            })
            .collect();
        io.sort_by(|a, b| (a.command, a.opcode).cmp(&(b.command, b.opcode)));
        io
    }

    fn off_cpu(&self, name: &dyn Fn(u32) -> Option<&'static str>) -> Vec<OffCpuFigures> {
        let mut off: Vec<OffCpuFigures> = fold(&self.offcpu, OffCpu::add)
            .map(|(kind, total)| OffCpuFigures {
                command: name(kind),
                blocked: Duration::from_nanos(total.blocked_ns),
                preempted: Duration::from_nanos(total.preempted_ns),
                switches: total.switches,
                long_blocks: total.long_blocks,
            })
            .collect();
        off.sort_by(|a, b| a.command.cmp(&b.command));
        off
    }

    /// Reads every waiting outlier record, keeping the latest.
    fn drain_events(&mut self, name: &dyn Fn(u32) -> Option<&'static str>) {
        while let Some(record) = self.events.next() {
            self.events_received += 1;
            let Ok(event) = Event::decode(&record) else {
                self.events_malformed += 1;
                continue;
            };
            let raw = event.raw;
            let kind = match event.what {
                EventType::SlowIo => KernelEventKind::SlowIo,
                EventType::FailedIo => KernelEventKind::FailedIo,
                EventType::BlockedPoll => KernelEventKind::BlockedPoll,
            };
            let is_io = kind != KernelEventKind::BlockedPoll;
            if self.recent.len() == RECENT_EVENTS {
                self.recent.pop_back();
            }
            self.recent.push_front(KernelEvent {
                kind,
                tid: raw.tid,
                command_id: raw.command,
                command: if raw.kind == 0 { None } else { name(raw.kind) },
                duration: Duration::from_nanos(raw.duration_ns),
                opcode: is_io.then(|| opcode_label(raw.opcode)),
                result: is_io.then_some(raw.res),
            });
        }
    }
}

/// Every entry of a per-CPU map, its CPUs' values added up with `add`.
fn fold<'a, K: aya::Pod, V: aya::Pod + Default>(
    map: &'a PerCpuHashMap<MapData, K, V>,
    add: fn(&mut V, &V),
) -> impl Iterator<Item = (K, V)> + 'a {
    map.iter()
        .filter_map(Result::ok)
        .map(move |(key, per_cpu)| {
            let mut total = V::default();
            for cpu in per_cpu.iter() {
                add(&mut total, cpu);
            }
            (key, total)
        })
}

/// The kernel's count of skipped runs of the program behind `program`
/// (`bpf_prog_info.recursion_misses`, Linux 5.12 and later; 0 before, or
/// when the kernel does not say).
fn recursion_misses(program: BorrowedFd<'_>) -> u64 {
    /// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: all-zero is a valid `bpf_prog_info` (integers and null
    // pointers): the kernel fills what it knows and reads no pointer left 0.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for the command, pointing
    // at `info`, whose size it gives; both outlive the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if result == 0 {
        info.recursion_misses
    } else {
        0
    }
}

/// An opcode's name, or `op<N>` for one newer than the table.
fn opcode_label(opcode: u32) -> String {
    opcode_name(opcode).map_or_else(|| format!("op{opcode}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::abridge;

    #[test]
    fn a_long_verifier_log_keeps_its_call_and_its_verdict() {
        let log: String = (0..500).map(|i| format!("{i}: (b7) r1 = 0\n")).collect();
        let message = format!(
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: {log}R1 pointer arithmetic with >>= operator prohibited\nprocessed 86 insns"
        );
        let short = abridge(message.clone());
        assert!(short.len() < 2_100, "{}", short.len());
        assert!(short.starts_with("the BPF_PROG_LOAD syscall returned Permission denied"));
        assert!(short.contains("R1 pointer arithmetic with >>= operator prohibited"));
        assert!(short.contains(" ... "));
        assert_eq!(abridge("short".to_owned()), "short");
        // Multi-byte characters at either cut are kept whole.
        let wide = "é".repeat(1_500);
        assert!(abridge(wide).chars().all(|c| c == 'é' || " .".contains(c)));
    }
}
