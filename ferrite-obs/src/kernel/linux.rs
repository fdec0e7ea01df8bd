//! The kernel view on Linux: chooses the programs of `ferrite-obs-bpf`
//! that fit the running kernel, loads them with aya, attaches them, reads
//! their maps at every rollup and detaches them at shutdown.
//!
//! The steps, each with its own failure (see `diagnose`): find tracefs, read
//! the kernel's BTF, choose the program variants from its tracepoint
//! prototypes (`variants`), create the maps, load and attach the chosen
//! programs, map the shared arrays. Reading the maps is in `maps`.

#[path = "btf.rs"]
mod btf;
#[path = "diagnose.rs"]
mod diagnose;
#[path = "maps.rs"]
mod maps;
#[path = "variants.rs"]
mod variants;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use ferrite_obs_bpf::{IoEntry, IoKey, IoStats, IoUsed, OffCpu, SLOTS};

use self::diagnose::{Failure, failure};
use self::variants::{Choice, Hook};
use super::{FailureCause, KernelEvent, KernelSnapshot, KernelStatus, LoadStep};
use crate::config::Config;

/// An attached program's link, detached at unload.
enum Link {
    Btf(BtfTracePointLinkId),
    Classic(TracePointLinkId),
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Where the kernel publishes its BTF.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A file read instead of the kernel's BTF when set: for tests of how the
/// view degrades on a kernel without BTF or without some tracepoint. Read
/// here only; not a setting.
const TEST_BTF_VARIABLE: &str = "FERRITE_OBS_TEST_BTF";

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
        let kernel = diagnose::release();
        match load(config) {
            Ok((loaded, plan)) => Kernel {
                status: KernelStatus::Active {
                    kernel,
                    attached: plan.programs.iter().map(|c| c.describe()).collect(),
                    unavailable: plan.unavailable,
                },
                loaded: Some(loaded),
            },
            Err(Failure {
                step,
                cause,
                error,
                fix,
            }) => Kernel {
                status: KernelStatus::Degraded {
                    kernel,
                    step,
                    cause,
                    error,
                    fix,
                },
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
        name: &dyn Fn(u32) -> Option<super::CommandName>,
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

/// The kernel's BTF (or the test's stand-in), parsed by aya for CO-RE and
/// the attach points, and its tracepoints' prototypes.
fn read_btf() -> Result<(Btf, btf::Tracepoints), Failure> {
    let path = std::env::var(TEST_BTF_VARIABLE).unwrap_or_else(|_| KERNEL_BTF.to_owned());
    let data = std::fs::read(&path).map_err(|e| diagnose::missing_btf(&path, &e))?;
    let tracepoints =
        btf::Tracepoints::parse(&data).map_err(|e| diagnose::missing_btf(&path, &e))?;
    let btf =
        Btf::parse(&data, Endianness::default()).map_err(|e| diagnose::missing_btf(&path, &e))?;
    Ok((btf, tracepoints))
}

fn load(config: &Config) -> Result<(Loaded, variants::Plan), Failure> {
    ensure_tracefs()?;
    let (btf, tracepoints) = read_btf()?;
    let plan = variants::choose(&tracepoints);
    if plan
        .programs
        .iter()
        .all(|c| matches!(c.hook, Hook::Classic(..)))
    {
        // Without the submission, completion and scheduler programs there
        // is no figure worth loading for.
        let mut reasons: Vec<String> = plan
            .unavailable
            .iter()
            .map(|u| format!("{}: {}", u.figure, u.reason))
            .collect();
        reasons.dedup();
        return Err(diagnose::nothing_fits(&reasons));
    }

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
        .btf(Some(&btf))
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

    for Choice { program, hook } in plan.programs.iter().copied() {
        let loaded = match hook {
            Hook::Btf(name) => program_mut::<BtfTracePoint>(&mut ebpf, program)?.load(name, &btf),
            Hook::Classic(..) => program_mut::<TracePoint>(&mut ebpf, program)?.load(),
        };
        loaded.map_err(|e| diagnose::load_failure(program, &e))?;
    }
    let mut links = Vec::with_capacity(plan.programs.len());
    for Choice { program, hook } in plan.programs.iter().copied() {
        let link = match hook {
            Hook::Btf(_) => program_mut::<BtfTracePoint>(&mut ebpf, program)?
                .attach()
                .map(Link::Btf),
            Hook::Classic(category, name) => program_mut::<TracePoint>(&mut ebpf, program)?
                .attach(category, name)
                .map(Link::Classic),
        };
        let link = link.map_err(|e| {
            let mut failure = failure(LoadStep::Attach, &e);
            failure.error = format!(
                "program {program} to {}: {}",
                hook.describe(),
                failure.error
            );
            failure
        })?;
        links.push((program, link));
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
        recent: VecDeque::with_capacity(super::RECENT_EVENTS),
        events_received: 0,
        events_malformed: 0,
    };
    drop(threads_map);
    // The last steps that can fail: mapping the arrays the host shares.
    super::commands::install(commands.fd().as_fd(), generation)
        .map_err(|e| diagnose::mapping_failure("the `commands` array", &e))?;
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
        return Err(diagnose::mapping_failure(
            "the `slots` and `registrations` arrays",
            &e,
        ));
    }
    Ok((loaded, plan))
}

/// Map `name` as the array it is declared as.
fn array<'a>(map: &'a aya::maps::Map, name: &str) -> Result<&'a MapData, Failure> {
    match map {
        aya::maps::Map::Array(data) => Ok(data),
        _ => Err(diagnose::object_mismatch(
            LoadStep::CreateMaps,
            format!("map `{name}` is not an array"),
        )),
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
            diagnose::object_mismatch(
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
        diagnose::object_mismatch(
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
        return Err(diagnose::object_mismatch(
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
                cause: FailureCause::MissingTracefs,
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
        cause: FailureCause::MissingTracefs,
        error: format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed: {}",
            io::Error::last_os_error()
        ),
        fix: format!(
            "mount it (`mount -t tracefs tracefs {TRACEFS}`), or give the server CAP_SYS_ADMIN to mount it itself"
        ),
    })
}
