//! The simulated host thread, its ring and the kernel programs that
//! `attribution_model.rs` drives: the host writes its slot table as
//! `tag_sqe` does (at push time) or as the tokio-uring adapter does (at the
//! end of a command's poll, for the SQEs the kernel has not consumed yet),
//! registers itself as `ferrite-obs` threads do (each registration writes
//! the thread's whole `threads` entry, `last_seq` 0 included), the kernel
//! side decides with `ferrite_obs_bpf::model` (the mirror of `consume_slot`,
//! `fo_submit`, `fo_failed` and `fo_complete`) and keeps the thread's
//! `last_seq` in that entry, and every submission and completion is checked
//! against what the host actually did.

use std::collections::VecDeque;

use ferrite_obs_bpf::model::{self, CQE_F_MORE, Completion, Consumption, SlotRead, Submission};
use ferrite_obs_bpf::{Counter, Inflight, SLOTS, Slot, ThreadRegistration};

/// The `user_data` values the host draws from: few, so values come back as
/// soon as their requests complete, and colliding modulo `SLOTS` (0 with
/// `SLOTS`, 1 with `SLOTS + 1` and `2 * SLOTS + 1`, 2 with `3 * SLOTS + 2`).
/// 0 also matches the `user_data` of a slot never written (all zeroes).
pub(crate) const USER_DATA: [u64; 8] = {
    let s = SLOTS as u64;
    [0, 1, 2, 3, s, s + 1, 2 * s + 1, 3 * s + 2]
};

/// The ring's kernel address (`ctx`).
const RING: u64 = 0xffff_8881_0440_0000;
/// The thread's first `seq`, as `ferrite-obs` gives each thread a base.
pub(crate) const SEQ_BASE: u64 = 1 << 40;
/// The first load's `generation` (`ferrite-obs` never uses 0, the
/// generation of a slot never written or written while unregistered).
pub(crate) const FIRST_GENERATION: u32 = 1;
/// `inflight_table` entries: few, so requests collide and go to the LRU.
const TABLE_ENTRIES: usize = 2;
/// `inflight` (LRU) entries: few, so the LRU evicts.
const INFLIGHT_ENTRIES: usize = 4;
/// The simulated thread.
const TID: u32 = 4242;
/// The thread's slot table (index + 1 in `slots`) and `Current` cell, as
/// registered.
const TABLE: u64 = 3;
const CURRENT: u64 = 0x7f3a_2d00_0040;

/// How the host pushes an SQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// No `tag_sqe`: the slot is not written (yet: the end of a command's
    /// poll may tag it, see [`Op::Poll`]).
    Untagged,
    /// `tag_sqe` outside any command: the slot says command 0.
    Outside,
    /// `tag_sqe` inside command `.0` (non-zero).
    Command(u64),
}

impl Tag {
    pub(crate) fn kind(self) -> u32 {
        match self {
            Tag::Command(command) => command as u32 + 10,
            _ => 0,
        }
    }
}

/// One step of a history.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// The host pushes an SQE with `USER_DATA[user_data]` (with
    /// [`Rules::reuse_only_free`], the first value from there on not in
    /// use). With `fails` the kernel rejects it at submission before
    /// `io_uring_submit_req` (bad opcode, flags): `fo_failed` sees it, and
    /// the batch stops there. With `faults` (and [`Rules::read_faults`]) the
    /// kernel's read of its slot faults.
    Push {
        user_data: usize,
        tag: Tag,
        fails: bool,
        faults: bool,
    },
    /// With no poll running, a poll of command `command` starts
    /// (`enter_command`: the thread registers if it is not yet, and notes
    /// the SQ tail); otherwise the running poll ends (`pushed_since`: the
    /// SQEs pushed since it started that the kernel has not consumed are
    /// tagged with its command, in push order).
    Poll { command: u64 },
    /// `io_uring_enter`: the kernel consumes the pushed SQEs in order (in a
    /// poll: tokio-uring entering the ring because the SQ is full).
    Submit,
    /// In-flight request number `which` (modulo their count) completes and
    /// `fo_complete` sees it; with `more`, a multishot completion that
    /// leaves it in flight.
    Complete { which: usize, more: bool },
    /// In-flight request `which` completes and the host reaps it, but
    /// `fo_complete` misses it: its `inflight` entry stays.
    Lose { which: usize },
    /// The kernel view is unloaded and loaded again: fresh maps (the thread
    /// is registered nowhere), a new generation, the thread's slot table
    /// unchanged. With `crowded` (and [`Rules::registration_failures`]) the
    /// thread's next attempt to register fails.
    Reload { crowded: bool },
}

/// What the host and the kernel may do besides the ordinary steps (pushes
/// tagged or not, late tags, submissions, failed submissions, completions,
/// lost completions, reloads). `threads` is a hash that never evicts: the
/// thread's entry, and its `last_seq`, stay until the next reload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// The host pushes a `user_data` only when no request of its is pending
    /// or in flight (slab indices); otherwise any value, duplicates too.
    pub(crate) reuse_only_free: bool,
    /// The read of a slot may fail (`consume_slot` finds no entry). Not
    /// possible with the tables in a mapped array, which the host never
    /// registers beyond; kept to pin what such a failure would do (formerly
    /// `bpf_probe_read_user` of a table in the host's memory, which could
    /// fault when the page was swapped out or made PROT_NONE by NUMA
    /// balancing).
    pub(crate) read_faults: bool,
    /// Registering the thread in a fresh `threads` map may fail (the map is
    /// full); `tag_as` then writes no slot.
    pub(crate) registration_failures: bool,
}

/// The contract the host is expected to keep: a `user_data` reused only
/// once its request completed (or failed). Failed submissions, late tags,
/// SQEs submitted in the middle of a poll, reloads and refused
/// registrations are all inside it.
pub(crate) const CONTRACT: Rules = Rules {
    reuse_only_free: true,
    read_faults: false,
    registration_failures: true,
};

/// The contract, with the kernel-side mishap the host cannot prevent: slot
/// read faults.
pub(crate) const MISHAPS: Rules = Rules {
    read_faults: true,
    ..CONTRACT
};

/// Everything allowed.
pub(crate) const ANYTHING: Rules = Rules {
    reuse_only_free: false,
    ..MISHAPS
};

/// Where the slot a misattributed request read came from (or, for a lost
/// tagger, why its own slot was refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Written by an SQE with the same `user_data` pushed after the request
    /// and before it was submitted.
    DuplicatePending,
    /// (For a lost tagger.) An earlier request of the batch read a slot
    /// written after the lost one, by a duplicate `user_data`, which moved
    /// the thread's `last_seq` past the lost one's `seq`: its intact slot
    /// looks stale.
    LastSeqAhead,
    /// Written by an earlier SQE whose own consumption could not read it:
    /// Its slot could not be read, so `last_seq` never moved past it.
    ReadFault,
    /// None of the above: a bug in the protocol or in this simulation
    /// (a failed submission or a late tag leaving its slot unread, a slot
    /// of an earlier load trusted, a slot written while the thread was
    /// unregistered trusted once it registered, a slot trusted twice: all
    /// fixed).
    Unexplained,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A request attributed to a command that did not tag it.
    Misattributed {
        request: usize,
        tag: Tag,
        got: u64,
        cause: Cause,
    },
    /// A request tagged by a command, unique, its slot intact and of the
    /// current load, read, yet not attributed to that command.
    TaggerLost {
        request: usize,
        tag: Tag,
        got: Submission,
        cause: Cause,
    },
    /// The counters do not add up.
    Counts {
        submitted: u64,
        attributed: u64,
        unattributed: u64,
    },
    /// A completion accounted to something else than its submission, or
    /// found (not found) while its entry was gone (present).
    Completion {
        request: usize,
        expected: Option<(u64, u32)>,
        got: Completion,
    },
}

/// An SQE pushed, not yet consumed by the kernel.
#[derive(Clone, Copy, Debug)]
struct Pushed {
    id: usize,
    /// Its position in the SQ (pushes so far when it was pushed).
    position: usize,
    user_data: u64,
    /// The tag in effect: as pushed, or the late tag of a poll's end.
    tag: Tag,
    fails: bool,
    faults: bool,
    /// Another SQE with the same `user_data` was pending when it was pushed.
    duplicate_before: bool,
}

/// A submitted request, not yet completed.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: usize,
    user_data: u64,
    /// The kernel's request address.
    req: u64,
    command: u64,
    kind: u32,
    /// Whether its `inflight` entry is still there (not evicted, not reloaded).
    tracked: bool,
}

/// What became of a push, for explaining misattributions.
#[derive(Clone, Copy, Debug, Default)]
struct History {
    /// What its own consumption (`fo_submit` or `fo_failed`) read; `None`:
    /// not consumed yet.
    read: Option<SlotRead>,
    /// The `seq` of the slot it wrote when a consumption last used that
    /// slot (the push may write its slot twice: at push time, then as a
    /// late tag).
    slot_used: Option<u64>,
}

/// The host thread, its ring and the kernel programs.
#[derive(Debug)]
pub(crate) struct Sim {
    rules: Rules,
    // The host.
    slots: Vec<Slot>,
    /// The push that last wrote each slot.
    writer: Vec<Option<usize>>,
    next_seq: u64,
    /// Whether the thread holds a slot table of the current load (taken,
    /// zeroed, by its first tag under that load).
    table: bool,
    /// The generation the thread registered under (`registered`), and
    /// whether with its table (`registered_slots`).
    registered: Option<u32>,
    registered_slots: bool,
    /// The next registration attempt fails.
    registration_fails: bool,
    /// SQEs pushed so far (the SQ tail) and consumed so far (the SQ head).
    tail: usize,
    head: usize,
    /// The running poll: its command and the SQ tail when it started.
    poll: Option<(u64, usize)>,
    pending: VecDeque<Pushed>,
    in_flight: Vec<InFlight>,
    history: Vec<History>,
    // The kernel.
    /// The loaded programs' `generation` (and the host's `GENERATION`).
    generation: u32,
    /// The thread's entry in `threads` (`struct fo_thread`): written whole
    /// by a registration, its `last_seq` then by `consume_slot`.
    thread: Option<ThreadRegistration>,
    /// The push whose slot set the thread's `last_seq`.
    last_seq_writer: Option<usize>,
    /// The `inflight_table` array (an entry with `req` 0 is free).
    inflight_table: [Inflight; TABLE_ENTRIES],
    /// The `inflight` LRU map, least recently used first.
    inflight: Vec<(u64, Inflight)>,
    free_reqs: Vec<u64>,
    next_req: u64,
    now: u64,
    // What happened.
    submitted: u64,
    pub(crate) failed: u64,
    /// Failed SQEs whose consumption used their slot.
    pub(crate) failed_slots_used: u64,
    pub(crate) attributed: u64,
    pub(crate) unattributed: u64,
    /// Slot reads (by `fo_submit` and `fo_failed`) refused, by counter.
    pub(crate) rejected: [u64; model_counters::LEN],
    /// Mismatches of a slot with the right `user_data` but of another
    /// load (none: every load has its own tables).
    pub(crate) generation_mismatches: u64,
    /// Consumptions that found no `threads` entry, and an entry without a
    /// slot table.
    pub(crate) no_entry: u64,
    pub(crate) no_table: u64,
    /// Slots written at the end of a poll.
    pub(crate) late_tags: u64,
    /// SQEs of a poll the kernel consumed before it ended, left untagged.
    pub(crate) consumed_mid_poll: u64,
    /// Successful registrations (updates of `threads`), and failed ones.
    pub(crate) registrations: u64,
    pub(crate) failed_registrations: u64,
    /// Tags not written because the thread was unregistered.
    pub(crate) unregistered_tags: u64,
    pub(crate) evictions: u64,
    pub(crate) stale_entries_overwritten: u64,
    /// Requests tracked in `inflight_table`, and in the LRU behind it.
    pub(crate) tracked_in_table: u64,
    pub(crate) tracked_in_lru: u64,
    pub(crate) completions: u64,
    pub(crate) decisions: Vec<(usize, Tag, Submission)>,
    pub(crate) violations: Vec<Violation>,
}

/// Indices into [`Sim::rejected`].
pub(crate) mod model_counters {
    use ferrite_obs_bpf::Counter;

    pub(crate) const LEN: usize = 3;

    pub(crate) fn index(counter: Counter) -> usize {
        match counter {
            Counter::ReadFaults => 0,
            Counter::SlotMismatch => 1,
            Counter::StaleSlots => 2,
            other => panic!("consume_slot rejects a slot with {other:?}"),
        }
    }
}

impl Sim {
    pub(crate) fn new(rules: Rules) -> Sim {
        Sim {
            rules,
            slots: vec![Slot::default(); SLOTS],
            writer: vec![None; SLOTS],
            next_seq: SEQ_BASE,
            table: false,
            registered: None,
            registered_slots: false,
            registration_fails: false,
            tail: 0,
            head: 0,
            poll: None,
            pending: VecDeque::new(),
            in_flight: Vec::new(),
            history: Vec::new(),
            generation: FIRST_GENERATION,
            thread: None,
            last_seq_writer: None,
            inflight_table: [Inflight::default(); TABLE_ENTRIES],
            inflight: Vec::new(),
            free_reqs: Vec::new(),
            next_req: 0xffff_8882_0000_0000,
            now: 0,
            submitted: 0,
            failed: 0,
            failed_slots_used: 0,
            attributed: 0,
            unattributed: 0,
            rejected: [0; model_counters::LEN],
            generation_mismatches: 0,
            no_entry: 0,
            no_table: 0,
            late_tags: 0,
            consumed_mid_poll: 0,
            registrations: 0,
            failed_registrations: 0,
            unregistered_tags: 0,
            evictions: 0,
            stale_entries_overwritten: 0,
            tracked_in_table: 0,
            tracked_in_lru: 0,
            completions: 0,
            decisions: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Runs `ops`, then checks the counters.
    pub(crate) fn run(rules: Rules, ops: &[Op]) -> Sim {
        let mut sim = Sim::new(rules);
        for &op in ops {
            sim.step(op);
        }
        sim.check_counts();
        sim
    }

    pub(crate) fn step(&mut self, op: Op) {
        self.now += 1;
        match op {
            Op::Push {
                user_data,
                tag,
                fails,
                faults,
            } => self.push(user_data, tag, fails, faults && self.rules.read_faults),
            Op::Poll { command } => match self.poll.take() {
                None => self.poll_start(command),
                Some((command, before)) => self.poll_end(command, before),
            },
            Op::Submit => self.submit(),
            Op::Complete { which, more } => self.complete(which, more),
            Op::Lose { which } => self.lose(which),
            Op::Reload { crowded } => self.reload(crowded && self.rules.registration_failures),
        }
    }

    fn in_use(&self, user_data: u64) -> bool {
        self.pending.iter().any(|p| p.user_data == user_data)
            || self.in_flight.iter().any(|r| r.user_data == user_data)
    }

    /// The slot `user_data` maps to.
    pub(crate) fn slot(&self, user_data: u64) -> Slot {
        self.slots[model::slot_index(user_data)]
    }

    /// The thread's `last_seq`, as `consume_slot` reads it (0 without an
    /// entry: not read then, the read finds no table).
    pub(crate) fn last_seq(&self) -> u64 {
        self.thread.map_or(0, |thread| thread.last_seq)
    }

    /// `ThreadState::register`: takes a table of this load first if
    /// `want_table` and the thread has none (zeroed), then one update of
    /// `threads` with the whole registration (the table, none before the
    /// first tag, and `last_seq` 0), which may fail.
    fn register(&mut self, want_table: bool) {
        if want_table && !self.table {
            self.table = true;
            self.slots.fill(Slot::default());
            self.writer.fill(None);
        }
        if self.registration_fails {
            // The update failed: the entry and `registered` stay as they
            // were.
            self.registration_fails = false;
            self.failed_registrations += 1;
            return;
        }
        self.thread = Some(ThreadRegistration {
            table: if self.table { TABLE } else { 0 },
            current: CURRENT,
            last_seq: 0,
            switched: Default::default(),
        });
        self.last_seq_writer = None;
        self.registrations += 1;
        self.registered = Some(self.generation);
        self.registered_slots = self.table;
    }

    /// `threads::tag_as` for push `id`: registers (taking a table) if the
    /// thread is not registered with its table under this generation, and
    /// writes the slot, unless it is still not registered.
    fn tag_as(&mut self, id: usize, user_data: u64, tag: Tag) {
        let command = match tag {
            Tag::Untagged => return,
            Tag::Outside => 0,
            Tag::Command(command) => command,
        };
        let ready = |sim: &Sim| sim.registered == Some(sim.generation) && sim.registered_slots;
        if !ready(self) {
            self.register(true);
        }
        if !ready(self) {
            self.unregistered_tags += 1;
            return;
        }
        let index = model::slot_index(user_data);
        self.slots[index] = Slot {
            user_data,
            command,
            seq: self.next_seq,
            kind: tag.kind(),
            generation: self.generation,
        };
        self.writer[index] = Some(id);
        self.next_seq += 1;
    }

    /// The host pushes an SQE and, unless untagged, writes its slot the way
    /// `tag_sqe` does.
    fn push(&mut self, pick: usize, tag: Tag, fails: bool, faults: bool) {
        let user_data = if self.rules.reuse_only_free {
            let free = (0..USER_DATA.len())
                .map(|i| USER_DATA[(pick + i) % USER_DATA.len()])
                .find(|&user_data| !self.in_use(user_data));
            let Some(user_data) = free else {
                return; // every value in use: the slab is full
            };
            user_data
        } else {
            USER_DATA[pick % USER_DATA.len()]
        };
        let id = self.history.len();
        self.history.push(History::default());
        self.tag_as(id, user_data, tag);
        let duplicate_before = self.pending.iter().any(|p| p.user_data == user_data);
        self.pending.push_back(Pushed {
            id,
            position: self.tail,
            user_data,
            tag,
            fails,
            faults,
            duplicate_before,
        });
        self.tail += 1;
    }

    /// `enter_command`: registers the thread if it is not registered under
    /// this generation (with its table if it has one), and notes the tail.
    fn poll_start(&mut self, command: u64) {
        if self.registered != Some(self.generation) {
            self.register(false);
        }
        self.poll = Some((command, self.tail));
    }

    /// `exit_command`'s `pushed_since(before)`: the positions from
    /// `max(before, head)` to the tail, in order, tagged with the poll's
    /// command; the ones the kernel consumed during the poll are not.
    fn poll_end(&mut self, command: u64, before: usize) {
        self.consumed_mid_poll += self.head.saturating_sub(before) as u64;
        let tag = Tag::Command(command);
        for at in 0..self.pending.len() {
            let request = self.pending[at];
            if request.position >= before {
                self.tag_as(request.id, request.user_data, tag);
                self.pending[at].tag = tag;
                self.late_tags += 1;
            }
        }
    }

    /// `io_uring_enter`: every pending SQE in push order, `fo_submit` for
    /// each, until one fails at submission (`fo_failed`).
    fn submit(&mut self) {
        while let Some(request) = self.pending.pop_front() {
            self.head += 1;
            if request.fails {
                // io_submit_sqe fails in io_init_req, before
                // trace_io_uring_submit_req: trace_io_uring_req_failed. The
                // host reaps the error CQE and frees the user_data. Without
                // IORING_SETUP_SUBMIT_ALL the kernel stops the batch here.
                self.fo_failed(request);
                break;
            }
            self.fo_submit(request);
        }
    }

    /// What `consume_slot` reads for `request`.
    fn read(&self, request: &Pushed) -> SlotRead {
        if self.thread.is_none_or(|thread| thread.table == 0) {
            SlotRead::NoTable
        } else if request.faults {
            SlotRead::Fault
        } else {
            SlotRead::Slot(self.slot(request.user_data))
        }
    }

    /// Notes what `consume_slot` did for `request`: its counters, and the
    /// thread's new `last_seq`.
    fn consumed(&mut self, request: &Pushed, read: SlotRead, consumption: Consumption) {
        let index = model::slot_index(request.user_data);
        self.history[request.id].read = Some(read);
        match (consumption.rejected, read) {
            (Some(counter), _) => {
                self.rejected[model_counters::index(counter)] += 1;
                if let SlotRead::Slot(slot) = read
                    && counter == Counter::SlotMismatch
                    && slot.user_data == request.user_data
                {
                    self.generation_mismatches += 1;
                }
            }
            (None, SlotRead::NoTable) if self.thread.is_none() => self.no_entry += 1,
            (None, SlotRead::NoTable) => self.no_table += 1,
            (None, SlotRead::Fault) => unreachable!("a fault is counted"),
            (None, SlotRead::Slot(slot)) => {
                // The slot read was written by `writer` (a slot never
                // written has generation 0, never used).
                let writer = self.writer[index];
                if let Some(writer) = writer {
                    self.history[writer].slot_used = Some(slot.seq);
                }
                self.last_seq_writer = writer;
            }
        }
        match &mut self.thread {
            Some(thread) => thread.last_seq = consumption.last_seq,
            // No entry: `consume_slot` returned before touching any.
            None => assert_eq!(read, SlotRead::NoTable),
        }
    }

    fn fo_failed(&mut self, request: Pushed) {
        let read = self.read(&request);
        let consumption = model::failed(read, request.user_data, self.generation, self.last_seq());
        self.failed += 1;
        if consumption.rejected.is_none() && matches!(read, SlotRead::Slot(_)) {
            self.failed_slots_used += 1;
        }
        self.consumed(&request, read, consumption);
    }

    fn fo_submit(&mut self, request: Pushed) {
        let read = self.read(&request);
        let decision = model::submit(read, request.user_data, self.generation, self.last_seq());
        self.submitted += 1;
        match decision.counted {
            Counter::Attributed => self.attributed += 1,
            Counter::Unattributed => self.unattributed += 1,
            other => panic!("fo_submit counted {other:?}"),
        }
        self.decisions.push((request.id, request.tag, decision));
        // Before noting the slot used, so a misattribution is explained by
        // the slot as it was.
        self.check_submission(&request, read, &decision);
        let consumption = Consumption {
            command: decision.command,
            kind: decision.kind,
            last_seq: decision.last_seq,
            rejected: decision.rejected,
        };
        self.consumed(&request, read, consumption);

        let req = self.free_reqs.pop().unwrap_or_else(|| {
            self.next_req += 0x100;
            self.next_req
        });
        let entry = Inflight {
            req,
            command: decision.command,
            submit_ns: self.now,
            ctx: RING,
            kind: decision.kind,
            tid: TID,
            opcode: 22,
            punted: 0,
            _pad: [0; 6],
        };
        self.track(req, entry);
        self.in_flight.push(InFlight {
            id: request.id,
            user_data: request.user_data,
            req,
            command: decision.command,
            kind: decision.kind,
            tracked: true,
        });
    }

    /// The properties of one submission.
    fn check_submission(&mut self, request: &Pushed, read: SlotRead, decision: &Submission) {
        // A request attributed to C was tagged by C.
        if decision.command != 0
            && (request.tag != Tag::Command(decision.command)
                || request.tag.kind() != decision.kind)
        {
            let cause = self.explain(request);
            self.violations.push(Violation::Misattributed {
                request: request.id,
                tag: request.tag,
                got: decision.command,
                cause,
            });
        }
        // A request tagged by C, unique among the pending SQEs, whose slot
        // nobody overwrote since, read under the load it was written for,
        // is attributed to C.
        if let Tag::Command(command) = request.tag {
            let index = model::slot_index(request.user_data);
            let own_slot_read = matches!(read, SlotRead::Slot(slot) if slot.generation == self.generation)
                && self.writer[index] == Some(request.id);
            let unique = !request.duplicate_before
                && !self
                    .pending
                    .iter()
                    .any(|later| later.user_data == request.user_data);
            if unique
                && own_slot_read
                && (decision.command != command || decision.kind != request.tag.kind())
            {
                let ahead = self
                    .last_seq_writer
                    .is_some_and(|writer| writer > request.id);
                let cause = if ahead && decision.rejected == Some(Counter::StaleSlots) {
                    Cause::LastSeqAhead
                } else {
                    Cause::Unexplained
                };
                self.violations.push(Violation::TaggerLost {
                    request: request.id,
                    tag: request.tag,
                    got: *decision,
                    cause,
                });
            }
        }
    }

    /// Which case a misattribution of `request` is.
    fn explain(&self, request: &Pushed) -> Cause {
        let index = model::slot_index(request.user_data);
        let Some(writer) = self.writer[index] else {
            return Cause::Unexplained;
        };
        if writer > request.id {
            let still_pending = self.pending.iter().any(|p| p.id == writer);
            return if still_pending {
                Cause::DuplicatePending
            } else {
                Cause::Unexplained
            };
        }
        let history = self.history[writer];
        if history.slot_used == Some(self.slots[index].seq) {
            // Used once already: `last_seq` moved to its `seq` then, and
            // nothing moves it back within a load.
            return Cause::Unexplained;
        }
        // Its own consumption faulted, so `last_seq` never moved past it.
        // (Refused otherwise, found no table, or not consumed yet: nothing
        // explains a later SQE trusting it.)
        if history.read == Some(SlotRead::Fault) {
            Cause::ReadFault
        } else {
            Cause::Unexplained
        }
    }

    /// `table_entry(req)`: the index of `req`'s entry of `inflight_table`.
    fn table_index(req: u64) -> usize {
        (req >> ferrite_obs_bpf::INFLIGHT_SHIFT) as usize & (TABLE_ENTRIES - 1)
    }

    /// The end of `fo_submit`: the table's entry when it is free or already
    /// `req`'s (a lost completion's), the LRU map otherwise.
    fn track(&mut self, req: u64, entry: Inflight) {
        let held = &mut self.inflight_table[Self::table_index(req)];
        if held.req == req || held.req == 0 {
            if held.req == req {
                self.stale_entries_overwritten += 1;
            }
            *held = entry;
            self.tracked_in_table += 1;
        } else {
            self.tracked_in_lru += 1;
            self.lru_update(req, entry);
        }
    }

    /// `find_inflight(req, &in_table)`: the entry and whether it is the
    /// table's.
    fn find(&mut self, req: u64) -> Option<(Inflight, bool)> {
        let held = self.inflight_table[Self::table_index(req)];
        if held.req == req {
            return Some((held, true));
        }
        self.lru_lookup(req).map(|entry| (entry, false))
    }

    /// `bpf_map_update_elem(&inflight, &req, ..., BPF_ANY)` on an LRU map.
    fn lru_update(&mut self, req: u64, entry: Inflight) {
        if let Some(at) = self.inflight.iter().position(|(key, _)| *key == req) {
            // The entry of an earlier request at this address whose
            // completion was lost.
            self.inflight.remove(at);
            self.stale_entries_overwritten += 1;
        } else if self.inflight.len() == INFLIGHT_ENTRIES {
            let (evicted, _) = self.inflight.remove(0);
            self.evictions += 1;
            // An entry left by a lost completion can be evicted while a
            // later request at its address is tracked in the table.
            if self.inflight_table[Self::table_index(evicted)].req != evicted {
                for request in &mut self.in_flight {
                    if request.req == evicted {
                        request.tracked = false;
                    }
                }
            }
        }
        self.inflight.push((req, entry));
    }

    /// `bpf_map_lookup_elem(&inflight, &req)`, which marks it used.
    fn lru_lookup(&mut self, req: u64) -> Option<Inflight> {
        let at = self.inflight.iter().position(|(key, _)| *key == req)?;
        let entry = self.inflight.remove(at);
        self.inflight.push(entry);
        Some(entry.1)
    }

    fn complete(&mut self, which: usize, more: bool) {
        if self.in_flight.is_empty() {
            return;
        }
        let at = which % self.in_flight.len();
        let request = self.in_flight[at];
        let found = self.find(request.req);
        let in_table = found.is_some_and(|(_, in_table)| in_table);
        let found = found.map(|(entry, _)| entry);
        let cflags = if more { CQE_F_MORE } else { 0 };
        let completion = model::complete(request.req, found.as_ref(), RING, cflags);
        let expected = request.tracked.then_some((request.command, request.kind));
        match completion {
            Completion::Tracked {
                request: entry,
                stays,
            } if expected == Some((entry.command, entry.kind)) => {
                self.completions += 1;
                let held = &mut self.inflight_table[Self::table_index(request.req)];
                match (stays, in_table) {
                    (true, true) => held.punted = 0,
                    (false, true) => held.req = 0,
                    (true, false) => {
                        if let Some((_, entry)) =
                            self.inflight.iter_mut().find(|(k, _)| *k == request.req)
                        {
                            entry.punted = 0;
                        }
                    }
                    (false, false) => self.inflight.retain(|(key, _)| *key != request.req),
                }
            }
            Completion::Untracked if expected.is_none() => {}
            got => self.violations.push(Violation::Completion {
                request: request.id,
                expected,
                got,
            }),
        }
        if !more {
            self.retire(at);
        }
    }

    /// The host reaps the completion; `fo_complete` never ran.
    fn lose(&mut self, which: usize) {
        if !self.in_flight.is_empty() {
            let at = which % self.in_flight.len();
            self.retire(at);
        }
    }

    /// The request is done: the kernel frees its address for reuse (most
    /// recently freed first, like its request cache) and the host its
    /// `user_data`.
    fn retire(&mut self, at: usize) {
        let request = self.in_flight.swap_remove(at);
        self.free_reqs.push(request.req);
    }

    /// A new load: a new generation, fresh `threads`, `inflight` and
    /// `slots` maps (the thread's table is gone with its load).
    fn reload(&mut self, crowded: bool) {
        self.generation += 1;
        self.thread = None;
        // The new load's tables: the thread takes one at its next tag.
        self.table = false;
        self.registered_slots = false;
        self.slots.fill(Slot::default());
        self.writer.fill(None);
        self.last_seq_writer = None;
        self.registration_fails = crowded;
        self.inflight_table = [Inflight::default(); TABLE_ENTRIES];
        self.inflight.clear();
        for request in &mut self.in_flight {
            request.tracked = false;
        }
    }

    pub(crate) fn check_counts(&mut self) {
        let by_command = self
            .decisions
            .iter()
            .filter(|(_, _, decision)| decision.command != 0)
            .count() as u64;
        if self.attributed + self.unattributed != self.submitted || self.attributed != by_command {
            self.violations.push(Violation::Counts {
                submitted: self.submitted,
                attributed: self.attributed,
                unattributed: self.unattributed,
            });
        }
    }

    /// The decision for push `id`.
    pub(crate) fn decision(&self, id: usize) -> Submission {
        self.decisions
            .iter()
            .find(|(request, _, _)| *request == id)
            .map(|(_, _, decision)| *decision)
            .unwrap_or_else(|| panic!("request {id} was not submitted"))
    }
}
