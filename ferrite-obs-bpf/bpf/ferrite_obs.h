/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Layouts shared by the kernel programs and userspace: map keys and values,
 * the per-thread tables the programs read from the process's memory, and
 * ring-buffer records. The single source of truth: `ferrite-obs-bpf`'s Rust
 * mirror types are checked against this file (sizes and field offsets).
 *
 * Every struct is padded explicitly so C and Rust agree without relying on
 * either compiler's implicit padding.
 */
#ifndef FERRITE_OBS_H
#define FERRITE_OBS_H

#include <linux/types.h>

/* ---- per-thread state the host writes */

/* Entries in a thread's slot table (a power of two). The tables are the
 * array map `slots`, mapped into the host's memory: table `t` is entries
 * [t * FO_SLOTS, (t + 1) * FO_SLOTS), written by the thread that registered
 * it, read by the programs with no copy from user memory. An SQE with user_data
 * `u` is described by entry `u & (FO_SLOTS - 1)` if that entry's user_data
 * is `u`; otherwise the request is unattributed (a collision). */
#define FO_SLOT_BITS 10
#define FO_SLOTS (1u << FO_SLOT_BITS)

/* One slot: the command that pushed the SQE carrying `user_data`.
 *
 * `seq` increases with every slot a thread writes, a thread pushes to one
 * ring only (the contract), and a ring consumes SQEs in the order they were
 * pushed, so a thread's slots are read in increasing `seq` order: a slot
 * whose `seq` is not above the last one read for that thread
 * (`fo_thread.last_seq`) was already used, by an earlier SQE with the same
 * user_data, and the SQE being submitted was never tagged. It counts as
 * unattributed instead of inheriting a stale command.
 *
 * `generation` is the load the slot was written under (the loader's
 * `generation` constant): a slot of another load is never trusted. (Each
 * load has its own tables, zeroed when a thread is given one, and a thread
 * writes no slot while unregistered; the check keeps a slot that is not
 * this load's from ever being used all the same.)
 *
 * Every SQE that reaches the kernel consumes its slot, whether it is
 * submitted (fo_submit) or fails before submission (fo_failed), so no
 * slot outlives its SQE unread. */
struct fo_slot {
	__u64 user_data;
	__u64 command; /* command id; 0: pushed outside any command */
	__u64 seq;
	__u32 kind;    /* command kind (site index + 1); 0: none */
	__u32 generation;
};

/* A thread's current command, as the runtime keeps it (a thread-local). */
struct fo_current {
	__u64 command;
	__u64 kind;
};

/* A switch-out of a thread inside a command's poll, pending until the
 * thread's next switch-in (`command` 0: none). */
struct fo_switch {
	__u64 at_ns;
	__u64 command;
	__u32 kind;
	__u32 blocked;
};

/* Map `threads` (tid -> registration): a thread's slot table and its
 * current-command cell. A hash that never evicts: entries leave when their
 * thread exits. */
struct fo_thread {
	__u64 table;    /* index + 1 of the thread's table in `slots`, or 0 */
	__u64 current;  /* address of a struct fo_current, or 0 */
	__u64 last_seq; /* seq of the last slot read; the programs write it,
			   a registration (userspace) resets it to 0 */
	/* The thread's pending switch-out: written by its switch-out inside a
	 * command's poll, consumed by its next switch-in (the two never run at
	 * once for one thread); a registration resets it to 0. Kept with the
	 * registration, so that no map can evict it. */
	struct fo_switch switched;
};

/* Map `registrations`: registrations direct-mapped by thread id, an array
 * the host maps into its memory. Thread `t` owns entry
 * `t & (FO_REGISTRATIONS - 1)` when it claims it (its `tid` 0 -> t, with an
 * atomic compare-and-swap, then the registration written with plain
 * stores) and releases it at exit (`tid` back to 0). A thread whose entry
 * another holds registers in the `threads` hash instead. The programs look
 * in the array first: an array lookup, no hashing, no system call to
 * register. */
#define FO_REGISTRATION_BITS 12
#define FO_REGISTRATIONS (1u << FO_REGISTRATION_BITS)
struct fo_registration {
	struct fo_thread thread;
	__u32 tid; /* the owner; 0: free */
	__u32 _pad;
};

/* ---- kernel-side state */

/* A submitted, not yet completed request of the process, in the array
 * `inflight_table` (direct-mapped by request address; `req` 0: free) or,
 * when its entry there is taken, in the LRU hash `inflight` (key: `req`). */
#define FO_INFLIGHT_SHIFT 8 /* struct io_kiocb is 256-byte aligned in its cache */
struct fo_inflight {
	__u64 req; /* the kernel request's address */
	__u64 command;
	__u64 submit_ns;
	__u64 ctx;
	__u32 kind;
	__u32 tid;
	__u8 opcode;
	__u8 punted;
	__u8 _pad[6];
};

/* Key of `io_stats`: a command kind (0: unattributed) and an opcode. */
struct fo_io_key {
	__u32 kind;
	__u32 opcode;
};

/* Log2 latency buckets: bucket i counts [2^i, 2^(i+1)) ns (bucket 0 also
 * holds 0); the last bucket holds everything from 2^(FO_LOG2_BUCKETS-1). */
#define FO_LOG2_BUCKETS 40

/* Value of `io_stats` (per CPU): completed requests of one key. */
struct fo_io_stats {
	__u64 ops;
	__u64 errors; /* completions with a negative result, and failed submits */
	__u64 bytes;  /* positive results of data-moving opcodes */
	__u64 punts;  /* requests handed to an io-wq worker */
	__u64 latency_ns;
	__u64 buckets[FO_LOG2_BUCKETS];
};

/* Per-CPU array `io_table`: io figures direct-mapped by key (entry
 * fo_io_index(key)). Each CPU's copy of an entry belongs to the first key
 * that reaches it on that CPU; a key whose entry another holds counts in
 * the per-CPU hash `io_stats` instead. A lookup in the array is a few
 * instructions where a hash lookup hashes and compares the key. The key is
 * the entry's `tag`, claimed with one 8-byte store (a reader copying the
 * entry sees no tag or the whole of it, never half a key): 0 while free,
 * else fo_io_tag(kind, opcode). The single-entry array `io_used` has a bit
 * per entry claimed on any CPU, so that a reader looks up only those. */
#define FO_IO_TABLE_BITS 8
#define FO_IO_TABLE (1u << FO_IO_TABLE_BITS)
struct fo_io_entry {
	__u64 tag;
	struct fo_io_stats stats;
};
struct fo_io_used {
	__u64 bits[FO_IO_TABLE / 64];
};

/* The tag of a claimed entry: the kind in the high 32 bits, the opcode in
 * bits 8 to 15, and bit 0 set. */
static inline __u64 fo_io_tag(__u32 kind, __u8 opcode)
{
	return ((__u64)kind << 32) | ((__u64)opcode << 8) | 1;
}

/* The entry of `io_table` for a key: a multiplicative hash of both fields. */
static inline __u32 fo_io_index(__u32 kind, __u32 opcode)
{
	return (kind * 0x9E3779B1u + opcode * 0x85EBCA77u) >> (32 - FO_IO_TABLE_BITS);
}

/* Value of `offcpu` (per CPU, key: command kind): time the process's
 * threads spent switched out while inside a poll of a command of that kind. */
struct fo_offcpu {
	__u64 blocked_ns;   /* switched out sleeping (S or D): blocking */
	__u64 preempted_ns; /* switched out runnable: run-queue delay */
	__u64 switches;
	__u64 long_blocks; /* blocked longer than the blocking threshold */
};

/* Map `commands`: the kernel figures of the live command invocations, an
 * array of FO_COMMAND_SLOTS entries that userspace maps into its memory.
 * A command id is `round << FO_COMMAND_BITS | index`, its index held by no
 * other live command (the host claims it as the command begins and
 * releases it as the command ends; index 0 is never claimed: such a
 * command has no entry). Command `c` has entry `c & (FO_COMMAND_SLOTS - 1)`:
 * the host writes it when the command begins, before the command can push a
 * request or be switched out inside a poll, and reads it when the command
 * ends.
 *
 * Each figure is one word, `tag << FO_TAG_SHIFT | value`, tagged with the
 * holder's round (fo_command_tag: never 0, which is the tag of an entry
 * nobody was given). The programs add with a compare-and-exchange of the
 * whole word that expects the tag of the command they charge, so the check
 * that the entry is still that command's and the addition are one atomic
 * step: a figure that arrives after its command ended (a request outliving
 * it) can never land in the entry's next holder, and is counted in
 * FO_C_COMMAND_MISSES instead. A value saturates at FO_VALUE_MASK (78 hours
 * of nanoseconds). */
#define FO_COMMAND_BITS 16
#define FO_COMMAND_SLOTS (1u << FO_COMMAND_BITS)
#define FO_TAG_SHIFT 48
#define FO_VALUE_MASK ((1ULL << FO_TAG_SHIFT) - 1)
struct fo_command {
	__u64 command; /* the id of the holder, for the host; 0: none */
	__u64 io_ops;
	__u64 io_ns; /* sum of the latencies of its completed requests */
	__u64 blocked_ns;
	__u64 preempted_ns;
};

/* The tag of command `command`'s figures: the low 16 bits of its round. */
static inline __u64 fo_command_tag(__u64 command)
{
	return (command >> FO_COMMAND_BITS) & 0xffff;
}


/* Indices of the per-CPU `counters` array. */
enum fo_counter {
	FO_C_SUBMITTED = 0,     /* requests the process submitted */
	FO_C_ATTRIBUTED,        /* ... carrying a command */
	FO_C_UNATTRIBUTED,      /* ... with no command (never guessed) */
	FO_C_SLOT_MISMATCH,     /* ... whose slot held another user_data */
	FO_C_COMPLETED,         /* completions of tracked requests */
	FO_C_PUNTED,            /* requests handed to io-wq */
	FO_C_FAILED,            /* submissions the kernel failed */
	FO_C_SHORT_WRITES,      /* short writes */
	FO_C_CQE_OVERFLOWS,     /* completions that overflowed the CQ ring */
	FO_C_EVENTS_DROPPED,    /* ring-buffer records lost (ring full) */
	FO_C_READ_FAULTS,       /* failed reads of the process's tables */
	FO_C_INFLIGHT_FULL,     /* requests not tracked: update failed */
	FO_C_STATS_FULL,        /* completions not aggregated: map full */
	FO_C_SWITCH_OUTS,       /* switch-outs inside a command's poll */
	FO_C_SWITCH_INS,        /* ... matched by their switch-in */
	FO_C_STALE_SLOTS,       /* submissions whose slot was already used */
	FO_C_COMMAND_MISSES,    /* figures of a command whose entry was not its own */
	FO_C_COUNT,
};

/* ---- ring-buffer records: only outliers travel */

enum fo_event_type {
	FO_EV_SLOW_IO = 1,      /* a completion slower than the slow threshold */
	FO_EV_FAILED_IO = 2,    /* a completion with a negative result */
	FO_EV_BLOCKED_POLL = 3, /* a command's poll blocked its thread too long */
};

struct fo_event {
	__u32 type;
	__u32 tid;
	__u64 command;
	__u64 duration_ns;
	__u64 user_data; /* 0 for FO_EV_BLOCKED_POLL */
	__u32 kind;
	__s32 res;       /* the completion's result; 0 for FO_EV_BLOCKED_POLL */
	__u32 opcode;    /* 0 for FO_EV_BLOCKED_POLL */
	__u32 _pad;
};

#endif /* FERRITE_OBS_H */
