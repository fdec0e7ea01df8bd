//! The simulated host thread, its ring and the kernel programs that
//! `attribution_model.rs` drives: the host writes its slot table as
//! `tag_sqe` does, the kernel side decides with `ferrite_obs_bpf::model`
//! (the mirror of `fo_submit` and `fo_complete`), and every submission and
//! completion is checked against what the host actually did.

use std::collections::VecDeque;

use ferrite_obs_bpf::model::{self, CQE_F_MORE, Completion, SlotRead, Submission};
use ferrite_obs_bpf::{Counter, Inflight, SLOTS, Slot};

/// The `user_data` values the host draws from: few, so values come back as
/// soon as their requests complete, and colliding modulo `SLOTS` (0 with
/// `SLOTS`, 1 with `SLOTS + 1` and `2 * SLOTS + 1`, 2 with `3 * SLOTS + 2`).
/// 0 also matches a slot never written (all zeroes).
pub(crate) const USER_DATA: [u64; 8] = {
    let s = SLOTS as u64;
    [0, 1, 2, 3, s, s + 1, 2 * s + 1, 3 * s + 2]
};

/// The ring's kernel address (`ctx`).
const RING: u64 = 0xffff_8881_0440_0000;
/// The thread's first `seq`, as `ferrite-obs` gives each thread a base.
pub(crate) const SEQ_BASE: u64 = 1 << 40;
/// `inflight` entries: few, so the LRU evicts.
const INFLIGHT_ENTRIES: usize = 4;
/// The simulated thread.
const TID: u32 = 4242;

/// How the host pushes an SQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// No `tag_sqe`: the slot is not written.
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
    /// use). With `fails` (and [`Rules::init_failures`]) the kernel rejects
    /// it at submission before `fo_submit` sees it.
    Push {
        user_data: usize,
        tag: Tag,
        fails: bool,
    },
    /// `io_uring_enter`: the kernel consumes the pushed SQEs in order.
    Submit,
    /// In-flight request number `which` (modulo their count) completes and
    /// `fo_complete` sees it; with `more`, a multishot completion that
    /// leaves it in flight.
    Complete { which: usize, more: bool },
    /// In-flight request `which` completes and the host reaps it, but
    /// `fo_complete` misses it: its `inflight` entry stays.
    Lose { which: usize },
    /// With [`Rules::reloads`]: the kernel view is unloaded and loaded
    /// again: fresh maps, the thread's slot table unchanged.
    Reload,
}

/// What the host and the kernel may do besides the ordinary steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// The host pushes a `user_data` only when no request of its is pending
    /// or in flight (slab indices); otherwise any value, duplicates too.
    pub(crate) reuse_only_free: bool,
    /// Some SQEs fail at submission before `fo_submit` (bad opcode, flags):
    /// the kernel posts an error CQE and stops the batch there.
    pub(crate) init_failures: bool,
    /// The kernel view may be reloaded.
    pub(crate) reloads: bool,
}

/// The contract the host is expected to keep: a `user_data` reused only
/// once its request completed, every SQE reaching `fo_submit`, one load.
pub(crate) const CONTRACT: Rules = Rules {
    reuse_only_free: true,
    init_failures: false,
    reloads: false,
};

/// Everything allowed.
pub(crate) const ANYTHING: Rules = Rules {
    reuse_only_free: false,
    init_failures: true,
    reloads: true,
};

/// Where the slot a misattributed request read came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Written by an SQE with the same `user_data` pushed after the request
    /// and before it was submitted.
    DuplicatePending,
    /// Written by an earlier SQE whose own submission never read it (it
    /// failed before `fo_submit`, or it was tagged after it was submitted),
    /// so `ring_seq` never moved past it.
    SlotNeverRead,
    /// Written by an earlier SQE submitted under an earlier load: the new
    /// `ring_seq` map does not know it.
    SlotFromEarlierLoad,
    /// (For a lost tagger.) An earlier request of the batch read a slot
    /// written after the lost one, by a duplicate `user_data`, which moved
    /// `ring_seq` past the lost one's `seq`: its intact slot looks stale.
    RingSeqAhead,
    /// None of the above: a bug in the protocol or in this simulation.
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
    /// A request tagged by a command, unique, its slot intact, yet not
    /// attributed to that command.
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

/// An SQE pushed, not yet submitted.
#[derive(Clone, Copy, Debug)]
struct Pushed {
    id: usize,
    user_data: u64,
    tag: Tag,
    fails: bool,
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
    /// The load during which `fo_submit` saw it; `None`: never.
    submitted_in_load: Option<u32>,
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
    pending: VecDeque<Pushed>,
    in_flight: Vec<InFlight>,
    history: Vec<History>,
    // The kernel.
    load: u32,
    ring_seq: Option<u64>,
    /// The push whose slot set `ring_seq`.
    ring_seq_writer: Option<usize>,
    /// The `inflight` LRU map, least recently used first.
    inflight: Vec<(u64, Inflight)>,
    free_reqs: Vec<u64>,
    next_req: u64,
    now: u64,
    // What happened.
    submitted: u64,
    pub(crate) attributed: u64,
    pub(crate) unattributed: u64,
    pub(crate) rejected: [u64; model_counters::LEN],
    pub(crate) evictions: u64,
    pub(crate) stale_entries_overwritten: u64,
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
            other => panic!("fo_submit rejects a slot with {other:?}"),
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
            pending: VecDeque::new(),
            in_flight: Vec::new(),
            history: Vec::new(),
            load: 0,
            ring_seq: None,
            ring_seq_writer: None,
            inflight: Vec::new(),
            free_reqs: Vec::new(),
            next_req: 0xffff_8882_0000_0000,
            now: 0,
            submitted: 0,
            attributed: 0,
            unattributed: 0,
            rejected: [0; model_counters::LEN],
            evictions: 0,
            stale_entries_overwritten: 0,
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
            } => self.push(user_data, tag, fails && self.rules.init_failures),
            Op::Submit => self.submit(),
            Op::Complete { which, more } => self.complete(which, more),
            Op::Lose { which } => self.lose(which),
            Op::Reload if self.rules.reloads => self.reload(),
            Op::Reload => {}
        }
    }

    fn in_use(&self, user_data: u64) -> bool {
        self.pending.iter().any(|p| p.user_data == user_data)
            || self.in_flight.iter().any(|r| r.user_data == user_data)
    }

    /// Writes the slot of the submitted request `id` as `tag_sqe` would
    /// have, but after its submission.
    pub(crate) fn tag_late(&mut self, id: usize, command: u64) {
        let request = self
            .in_flight
            .iter()
            .find(|r| r.id == id)
            .expect("in flight");
        let index = model::slot_index(request.user_data);
        self.slots[index] = Slot {
            user_data: request.user_data,
            command,
            seq: self.next_seq,
            kind: Tag::Command(command).kind(),
            _pad: 0,
        };
        self.writer[index] = Some(id);
        self.next_seq += 1;
    }

    /// The host pushes an SQE and, unless untagged, writes its slot the way
    /// `tag_sqe` does.
    fn push(&mut self, pick: usize, tag: Tag, fails: bool) {
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
        let command = match tag {
            Tag::Untagged => None,
            Tag::Outside => Some(0),
            Tag::Command(command) => Some(command),
        };
        if let Some(command) = command {
            let index = model::slot_index(user_data);
            self.slots[index] = Slot {
                user_data,
                command,
                seq: self.next_seq,
                kind: tag.kind(),
                _pad: 0,
            };
            self.writer[index] = Some(id);
            self.next_seq += 1;
        }
        let duplicate_before = self.pending.iter().any(|p| p.user_data == user_data);
        self.pending.push_back(Pushed {
            id,
            user_data,
            tag,
            fails,
            duplicate_before,
        });
    }

    /// `io_uring_enter`: every pending SQE in push order, `fo_submit` for
    /// each, until one fails at submission.
    fn submit(&mut self) {
        while let Some(request) = self.pending.pop_front() {
            if request.fails {
                // io_submit_sqe fails before trace_io_uring_submit_req; the
                // host reaps the error CQE and frees the user_data. Without
                // IORING_SETUP_SUBMIT_ALL the kernel stops the batch here.
                break;
            }
            self.fo_submit(request);
        }
    }

    fn fo_submit(&mut self, request: Pushed) {
        let index = model::slot_index(request.user_data);
        let decision = model::submit(
            SlotRead::Slot(self.slots[index]),
            request.user_data,
            self.ring_seq,
        );
        self.ring_seq = decision.ring_seq;
        self.submitted += 1;
        match decision.counted {
            Counter::Attributed => self.attributed += 1,
            Counter::Unattributed => self.unattributed += 1,
            other => panic!("fo_submit counted {other:?}"),
        }
        self.decisions.push((request.id, request.tag, decision));
        // Before noting the slot read, so a misattribution is explained by
        // the slot as it was.
        self.check_submission(&request, &decision);
        match (decision.rejected, self.writer[index]) {
            (Some(counter), _) => self.rejected[model_counters::index(counter)] += 1,
            // The slot read was written by `writer` (else it is the all-zero
            // slot of a table never written there, read by user_data 0).
            (None, Some(writer)) => {
                self.history[writer].submitted_in_load = Some(self.load);
                self.ring_seq_writer = Some(writer);
            }
            (None, None) => {}
        }

        let req = self.free_reqs.pop().unwrap_or_else(|| {
            self.next_req += 0x100;
            self.next_req
        });
        let entry = Inflight {
            command: decision.command,
            submit_ns: self.now,
            ctx: RING,
            kind: decision.kind,
            tid: TID,
            opcode: 22,
            punted: 0,
            _pad: [0; 6],
        };
        self.lru_update(req, entry);
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
    fn check_submission(&mut self, request: &Pushed, decision: &Submission) {
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
        // nobody overwrote, is attributed to C.
        if let Tag::Command(command) = request.tag {
            let index = model::slot_index(request.user_data);
            let overwritten = self.pending.iter().any(|later| {
                later.tag != Tag::Untagged && model::slot_index(later.user_data) == index
            });
            let unique = !request.duplicate_before
                && !self
                    .pending
                    .iter()
                    .any(|later| later.user_data == request.user_data);
            if unique
                && !overwritten
                && (decision.command != command || decision.kind != request.tag.kind())
            {
                let ahead = self
                    .ring_seq_writer
                    .is_some_and(|writer| writer > request.id);
                let cause = if ahead && decision.rejected == Some(Counter::StaleSlots) {
                    Cause::RingSeqAhead
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
        let Some(writer) = self.writer[model::slot_index(request.user_data)] else {
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
        match self.history[writer].submitted_in_load {
            None => Cause::SlotNeverRead,
            Some(load) if load < self.load => Cause::SlotFromEarlierLoad,
            Some(_) => Cause::Unexplained,
        }
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
            for request in &mut self.in_flight {
                if request.req == evicted {
                    request.tracked = false;
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
        let found = self.lru_lookup(request.req);
        let cflags = if more { CQE_F_MORE } else { 0 };
        let completion = model::complete(request.req, found.as_ref(), RING, cflags);
        let expected = request.tracked.then_some((request.command, request.kind));
        match completion {
            Completion::Tracked {
                request: entry,
                stays,
            } if expected == Some((entry.command, entry.kind)) => {
                self.completions += 1;
                if stays {
                    if let Some((_, entry)) =
                        self.inflight.iter_mut().find(|(k, _)| *k == request.req)
                    {
                        entry.punted = 0;
                    }
                } else {
                    self.inflight.retain(|(key, _)| *key != request.req);
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

    fn reload(&mut self) {
        self.load += 1;
        self.ring_seq = None;
        self.ring_seq_writer = None;
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
