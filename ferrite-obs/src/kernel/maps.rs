//! Reading the loaded programs' maps at every rollup: counters, io figures
//! per (command, opcode), off-CPU time per command and the outlier records.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use aya::maps::{MapData, PerCpuHashMap};
use ferrite_obs_bpf::{Counter, Event, EventType, IoKey, IoStats, IoUsed, OffCpu, opcode_name};

use super::Loaded;
use super::variants::ALL_PROGRAMS;
use crate::kernel::{
    CommandName, IoFigures, KernelCounters, KernelEvent, KernelEventKind, OffCpuFigures,
    RECENT_EVENTS,
};

impl Loaded {
    /// Runs of the programs the kernel skipped: a program never runs nested
    /// on one CPU, so a tracepoint that fires while it runs there (a
    /// completion in an interrupt during a submission, say) goes unseen.
    fn runs_skipped(&self) -> u64 {
        ALL_PROGRAMS
            .iter()
            .filter_map(|name| self.ebpf.program(name)?.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd()))
            .fold(0, u64::wrapping_add)
    }

    pub(super) fn counters(&self) -> KernelCounters {
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
            commands_without_entry: crate::core::command::unindexed(),
            threads_without_slot_table: crate::kernel::threads::refused(),
            threads_unregistered: crate::kernel::threads::unregistered(),
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

    pub(super) fn io(&self, name: &dyn Fn(u32) -> Option<CommandName>) -> Vec<IoFigures> {
        let mut io: Vec<IoFigures> = self
            .io_totals()
            .into_iter()
            .map(|(key, total)| {
                let named = if key.kind == 0 { None } else { name(key.kind) };
                (key, total, named)
            })
            .map(|(key, total, named)| IoFigures {
                command: named.map(|n| n.name),
                module: named.map(|n| n.module),
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
        io.sort_by(|a, b| (a.command, a.module, a.opcode).cmp(&(b.command, b.module, b.opcode)));
        io
    }

    pub(super) fn off_cpu(&self, name: &dyn Fn(u32) -> Option<CommandName>) -> Vec<OffCpuFigures> {
        let mut off: Vec<OffCpuFigures> = fold(&self.offcpu, OffCpu::add)
            .map(|(kind, total)| (name(kind), total))
            .map(|(named, total)| OffCpuFigures {
                command: named.map(|n| n.name),
                module: named.map(|n| n.module),
                blocked: Duration::from_nanos(total.blocked_ns),
                preempted: Duration::from_nanos(total.preempted_ns),
                switches: total.switches,
                long_blocks: total.long_blocks,
            })
            .collect();
        off.sort_by(|a, b| (a.command, a.module).cmp(&(b.command, b.module)));
        off
    }

    /// Reads every waiting outlier record, keeping the latest.
    pub(super) fn drain_events(&mut self, name: &dyn Fn(u32) -> Option<CommandName>) {
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
                command: if raw.kind == 0 {
                    None
                } else {
                    name(raw.kind).map(|n| n.name)
                },
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
