// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ferrite-obs kernel programs: io_uring requests of one process attributed to
 * the commands that issued them, and the off-CPU time of its commands.
 *
 * Only the process whose tgid the loader sets in `target_tgid` is observed.
 * Aggregation happens here (per-CPU log2 histograms and counters); only
 * outliers (slow or failed completions, blocking polls) go through the ring
 * buffer.
 *
 * The tracepoints' arguments differ between kernels, so some programs come
 * in variants, one per layout, compiled from the same code (an inline body
 * per figure, a thin entry per layout): the loader reads the running
 * kernel's BTF (the `btf_trace_<tracepoint>` prototypes), loads the variant
 * that fits and leaves the others unloaded. Every variant feeds the same
 * maps the same way:
 *
 *   fo_submit          io_uring_submit_req(req) and io_uring_submit_sqe(req,
 *                      force_nonblock): the request is the first argument of
 *                      both; the loader attaches it to whichever exists
 *   fo_complete        io_uring_complete(ctx, req, cqe)
 *   fo_complete_flat   io_uring_complete(ctx, req, user_data, res, cflags,
 *                      extra1, extra2), ctx and req as `void *`
 *   fo_switch          sched_switch(preempt, prev, next, prev_state)
 *   fo_switch_task     sched_switch(preempt, prev, next): the state read from
 *                      the task (`__state`, or `state` before it was renamed)
 *
 * Attribution: a runtime thread registers (in `registrations`, or in
 * `threads` when its entry there is taken) its slot table (in `slots`:
 * user_data -> command, written when the SQE is pushed) and the address of
 * its current-command cell. io_uring_submit_req runs in the thread that
 * calls io_uring_enter, which for a thread's own ring is the thread that
 * pushed the SQE, so its slot table is the right one to read.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "ferrite_obs.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader before load. */
volatile const __u32 target_tgid = 0;
volatile const __u64 slow_io_ns = ~0ULL;
volatile const __u64 block_threshold_ns = ~0ULL;
volatile const __u32 generation = 0;
/* Slot tables in `slots` (it holds slot_tables * FO_SLOTS entries). */
volatile const __u32 slot_tables = 64;
/* `inflight_table`'s entries minus one (its size is a power of two). */
volatile const __u32 inflight_mask = 65535;

/* Default sizes; the loader may override every max_entries. */

/* The threads' slot tables, mapped into the host (see struct fo_slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64 * FO_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct fo_slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct fo_thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FO_REGISTRATIONS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct fo_registration);
} registrations SEC(".maps");

/*
 * In-flight requests, found by kernel request address: first in
 * `inflight_table`, direct-mapped (entry `(req >> FO_INFLIGHT_SHIFT) &
 * inflight_mask`, whose `req` says which request holds it; an array lookup
 * is a few instructions, a hash update a few hundred nanoseconds), and
 * when that entry is held by another request, in `inflight`, an LRU hash:
 * a lost completion can pin an entry of the table only until its request
 * address is submitted again, and can never leak one of the LRU.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fo_inflight);
} inflight_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u64);
	__type(value, struct fo_inflight);
} inflight SEC(".maps");


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fo_io_key);
	__type(value, struct fo_io_stats);
} io_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FO_IO_TABLE);
	__type(key, __u32);
	__type(value, struct fo_io_entry);
} io_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fo_io_used);
} io_used SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct fo_offcpu);
} offcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FO_COMMAND_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct fo_command);
} commands SEC(".maps");


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FO_C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/*
 * One clock reading per batch. The requests one io_uring_enter submits are
 * handed to the kernel together, and the completions one flush posts
 * become visible to the process together (the ring's head, or its tail, is
 * published once, after the whole batch): each batch's time is read once,
 * at its first request, and shared by the rest, which spares a clock
 * reading (about 40 ns here) per request of a batched ring. A request's
 * latency then runs from the start of the batch that submitted it to the
 * start of the flush that posted its completion.
 *
 * A batch is recognised on its CPU by its ring and the ring's published
 * index (the SQ head while submitting, the CQ tail while posting), which
 * the kernel moves only once the batch is done, and by the jiffy, which
 * bounds what a reading shared by mistake could be off by. Entry
 * FO_CLOCK_SUBMIT is the submissions', FO_CLOCK_COMPLETE the completions'.
 */
struct fo_batch_clock {
	__u64 ctx;
	__u64 jiffies;
	__u64 ns;
	__u32 published;
	__u32 _pad;
};

enum { FO_CLOCK_SUBMIT = 0, FO_CLOCK_COMPLETE = 1 };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct fo_batch_clock);
} clocks SEC(".maps");

/*
 * The hot programs (submission, completion, context switch) are BTF
 * tracepoints: the kernel hands them its own arguments, with no record
 * formatted for them, which halves what an empty program costs per event.
 * Their arguments are kernel structures, relocated against the kernel's BTF
 * at load (CO-RE) and read directly: the verifier knows their types.
 */
struct io_cqe {
	__u64 user_data;
} __attribute__((preserve_access_index));

/* A ring's head and tail, as published to the process. */
struct io_uring {
	__u32 head;
	__u32 tail;
} __attribute__((preserve_access_index));

struct io_rings {
	struct io_uring sq;
	struct io_uring cq;
} __attribute__((preserve_access_index));

struct io_ring_ctx {
	struct io_rings *rings;
} __attribute__((preserve_access_index));

struct io_kiocb {
	__u8 opcode;
	struct io_cqe cqe;
	struct io_ring_ctx *ctx;
} __attribute__((preserve_access_index));

struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	unsigned int __state;
} __attribute__((preserve_access_index));

/* The task's state as kernels before the rename to `__state` name it (the
 * `___` suffix is a CO-RE flavour: it relocates against `task_struct`). */
struct task_struct___state {
	long state;
} __attribute__((preserve_access_index));

/* The rare ones stay classic tracepoints, reading the kernel's formatted
 * record, relocated the same way. */
struct trace_event_raw_io_uring_queue_async_work {
	void *req;
} __attribute__((preserve_access_index));

struct trace_event_raw_io_uring_req_failed {
	void *ctx;
	void *req;
	__u64 user_data;
	__u8 opcode;
} __attribute__((preserve_access_index));


#define CQE_F_MORE (1U << 1)

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1; /* per-CPU: no other writer */
}

/* Whether the current task is one of the target process's threads; its
 * thread id in `tid` either way. */
static __always_inline int current_target(__u32 *tid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	*tid = (__u32)pid_tgid;
	return (pid_tgid >> 32) == target_tgid;
}

static __always_inline __u32 log2_bucket(__u64 ns)
{
	__u32 bucket = 0;
	/* Unrolled binary search: bounded for the verifier. */
	if (ns >> 32) { ns >>= 32; bucket += 32; }
	if (ns >> 16) { ns >>= 16; bucket += 16; }
	if (ns >> 8) { ns >>= 8; bucket += 8; }
	if (ns >> 4) { ns >>= 4; bucket += 4; }
	if (ns >> 2) { ns >>= 2; bucket += 2; }
	if (ns >> 1) { bucket += 1; }
	return bucket < FO_LOG2_BUCKETS ? bucket : FO_LOG2_BUCKETS - 1;
}

/* Bytes for opcodes whose positive result is a byte count. */
static __always_inline int moves_data(__u8 opcode)
{
	switch (opcode) {
	case 1: case 2: case 4: case 5:  /* READV WRITEV READ_FIXED WRITE_FIXED */
	case 9: case 10:                 /* SENDMSG RECVMSG */
	case 22: case 23: case 26: case 27: /* READ WRITE SEND RECV */
	case 47: case 48: case 49:       /* SEND_ZC SENDMSG_ZC READ_MULTISHOT */
	case 60: case 61:                /* READV_FIXED WRITEV_FIXED */
		return 1;
	default:
		return 0;
	}
}

/* The figures of (kind, opcode) on this CPU: its `io_table` entry when it
 * holds it or can claim it, else its `io_stats` entry (created if missing),
 * or NULL (counted) when that map is full. Per CPU, and only fo_complete
 * writes them (a program never runs nested on one CPU): no atomics. */
static __always_inline struct fo_io_stats *io_stats_of(__u32 kind, __u8 opcode)
{
	__u32 index = fo_io_index(kind, opcode);
	struct fo_io_entry *entry = bpf_map_lookup_elem(&io_table, &index);
	if (entry) {
		__u64 tag = fo_io_tag(kind, opcode);
		if (entry->tag == tag)
			return &entry->stats;
		if (!entry->tag) {
			entry->tag = tag; /* one store: see struct fo_io_entry */
			__u32 zero = 0;
			struct fo_io_used *used = bpf_map_lookup_elem(&io_used, &zero);
			if (used)
				__sync_fetch_and_or(&used->bits[(index / 64) & (FO_IO_TABLE / 64 - 1)],
						    1ULL << (index % 64));
			return &entry->stats;
		}
	}
	struct fo_io_key key = { .kind = kind, .opcode = opcode };
	struct fo_io_stats *stats = bpf_map_lookup_elem(&io_stats, &key);
	if (stats)
		return stats;
	static const struct fo_io_stats zero = {};
	bpf_map_update_elem(&io_stats, &key, &zero, BPF_NOEXIST);
	stats = bpf_map_lookup_elem(&io_stats, &key);
	if (!stats)
		count(FO_C_STATS_FULL);
	return stats;
}

/* The time of the batch ring `ctx` is submitting (`which` FO_CLOCK_SUBMIT,
 * `published` its SQ head) or posting (FO_CLOCK_COMPLETE, its CQ tail) on
 * this CPU: read now if this is the batch's first request, else the reading
 * its first request took (see struct fo_batch_clock). Programs never run
 * nested on one CPU: the entry has no other writer meanwhile. */
static __always_inline __u64 batch_clock(__u32 which, __u64 ctx, __u32 published)
{
	struct fo_batch_clock *clock = bpf_map_lookup_elem(&clocks, &which);
	if (!clock)
		return bpf_ktime_get_ns();
	__u64 jiffies = bpf_jiffies64();
	if (clock->ctx == ctx && clock->published == published && clock->jiffies == jiffies)
		return clock->ns;
	__u64 now = bpf_ktime_get_ns();
	clock->ctx = ctx;
	clock->published = published;
	clock->jiffies = jiffies;
	clock->ns = now;
	return now;
}

/* Where a program turns a kernel pointer into a number (see address_of). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} scratch SEC(".maps");

/* The address `pointer` holds, as a number. The verifier lets no arithmetic
 * but addition touch a typed pointer; stored into a map value (which a
 * program loaded with CAP_PERFMON may do) and loaded back, it is a number,
 * at the cost of a store and a load rather than a helper call. */
static __always_inline __u64 address_of(const void *pointer)
{
	__u32 zero = 0;
	volatile __u64 *cell = bpf_map_lookup_elem(&scratch, &zero);
	__u64 address = 0;
	if (cell) {
		*cell = (__u64)pointer;
		address = *cell;
	} else {
		/* Never: the array has this CPU's entry 0. */
		bpf_probe_read_kernel(&address, sizeof(address), &pointer);
	}
	return address;
}

/* Command `command`'s entry of `commands`, or NULL for a command without
 * one (index 0). Whether the entry is still the command's is decided by
 * charge(), atomically with the addition. */
static __always_inline struct fo_command *command_entry(__u64 command)
{
	__u32 index = (__u32)command & (FO_COMMAND_SLOTS - 1);
	if (!index)
		return 0;
	return bpf_map_lookup_elem(&commands, &index);
}

/* Attempts of charge() before it gives up on a word other CPUs keep
 * changing (each failed attempt is another CPU's successful one). */
#define FO_CHARGE_ATTEMPTS 8

/* Adds `delta` to the figure `word` of a command whose tag is `tag`, if the
 * word still carries that tag (see struct fo_command): returns 1, or 0
 * (counted) when the entry is another command's. */
static __always_inline int charge(__u64 *word, __u64 tag, __u64 delta)
{
	for (int attempt = 0; attempt < FO_CHARGE_ATTEMPTS; attempt++) {
		__u64 old = *(volatile __u64 *)word;
		if ((old >> FO_TAG_SHIFT) != tag)
			break;
		__u64 value = (old & FO_VALUE_MASK) + delta;
		if (value > FO_VALUE_MASK)
			value = FO_VALUE_MASK;
		if (__sync_val_compare_and_swap(word, old, (tag << FO_TAG_SHIFT) | value) == old)
			return 1;
	}
	count(FO_C_COMMAND_MISSES);
	return 0;
}

/* Thread `tid`'s registration: its entry of `registrations` if it holds
 * it, else its `threads` entry, or NULL. */
static __always_inline struct fo_thread *thread_of(__u32 tid)
{
	__u32 index = tid & (FO_REGISTRATIONS - 1);
	struct fo_registration *entry = bpf_map_lookup_elem(&registrations, &index);
	if (entry && entry->tid == tid)
		return &entry->thread;
	return bpf_map_lookup_elem(&threads, &tid);
}

/* The entry of `inflight_table` where request `req` would be. */
static __always_inline struct fo_inflight *table_entry(__u64 req)
{
	__u32 index = (__u32)(req >> FO_INFLIGHT_SHIFT) & inflight_mask;
	return bpf_map_lookup_elem(&inflight_table, &index);
}

/* Request `req`'s in-flight entry, in the table or the LRU map, or NULL;
 * `*in_table` says which. */
static __always_inline struct fo_inflight *find_inflight(__u64 req, int *in_table)
{
	struct fo_inflight *entry = table_entry(req);
	if (entry && entry->req == req) {
		*in_table = 1;
		return entry;
	}
	*in_table = 0;
	return bpf_map_lookup_elem(&inflight, &req);
}

/* The command that pushed the SQE carrying `user_data`, as the submitting
 * thread's slot table says, or 0; consumes the slot (see struct fo_slot). */
static __always_inline __u64 consume_slot(__u32 tid, __u64 user_data, __u32 *kind)
{
	struct fo_thread *thread = thread_of(tid);
	if (!thread || !thread->table)
		return 0;
	__u32 index = (__u32)(thread->table - 1) * FO_SLOTS + ((__u32)user_data & (FO_SLOTS - 1));
	struct fo_slot *entry = thread->table <= slot_tables
					? bpf_map_lookup_elem(&slots, &index)
					: 0;
	if (!entry) {
		count(FO_C_READ_FAULTS); /* a registration naming no table */
		return 0;
	}
	struct fo_slot slot = *entry;
	if (slot.user_data != user_data || slot.generation != generation) {
		count(FO_C_SLOT_MISMATCH);
		return 0;
	}
	if (slot.seq <= thread->last_seq) {
		count(FO_C_STALE_SLOTS);
		return 0;
	}
	thread->last_seq = slot.seq; /* only this thread's programs write it */
	*kind = slot.kind;
	return slot.command;
}

/* io_uring_submit_req(struct io_kiocb *req), and its older name and form
 * io_uring_submit_sqe(struct io_kiocb *req, bool force_nonblock): the
 * loader attaches it to the one the kernel has. */
SEC("tp_btf/io_uring_submit_req")
int fo_submit(__u64 *args)
{
	__u32 tid;
	if (!current_target(&tid))
		return 0;
	struct io_kiocb *kiocb = (struct io_kiocb *)args[0];
	struct io_ring_ctx *ctx = kiocb->ctx;
	struct fo_inflight request = {
		.submit_ns = batch_clock(FO_CLOCK_SUBMIT, (__u64)ctx, ctx->rings->sq.head),
		.ctx = (__u64)ctx,
		.tid = tid,
		.opcode = kiocb->opcode,
	};
	count(FO_C_SUBMITTED);
	request.command = consume_slot(tid, kiocb->cqe.user_data, &request.kind);
	count(request.command ? FO_C_ATTRIBUTED : FO_C_UNATTRIBUTED);

	__u64 req = address_of(kiocb);
	request.req = req;
	/* The table's entry, when it is free or already this address's (left
	 * by a completion that was missed: that request is gone, the address
	 * is being reused). Claimed atomically: submissions run on every CPU. */
	struct fo_inflight *entry = table_entry(req);
	if (entry) {
		__u64 held = entry->req;
		if (held == req || (held == 0 && __sync_val_compare_and_swap(&entry->req, 0, req) == 0)) {
			*entry = request; /* its `req` is already this request's */
			return 0;
		}
	}
	if (bpf_map_update_elem(&inflight, &req, &request, BPF_ANY) != 0)
		count(FO_C_INFLIGHT_FULL);
	return 0;
}

SEC("tracepoint/io_uring/io_uring_queue_async_work")
int fo_punt(struct trace_event_raw_io_uring_queue_async_work *tp)
{
	int in_table;
	struct fo_inflight *request = find_inflight((__u64)tp->req, &in_table);
	if (!request)
		return 0;
	request->punted = 1;
	count(FO_C_PUNTED);
	return 0;
}

/* A completion of request `req` of ring `ctx` (the kernel's addresses),
 * posted while the ring's CQ tail reads `cq_tail`: its figures, and an
 * outlier record when it failed or was slow. */
static __always_inline int complete(__u64 ctx, __u64 req, __u64 user_data, int res,
				    __u32 cflags, __u32 cq_tail)
{
	int in_table;
	struct fo_inflight *found = find_inflight(req, &in_table);
	/* The ctx check guards against a request address reused by another
	 * ring after a completion this program missed. */
	if (!found || found->ctx != ctx)
		return 0;
	struct fo_inflight request = *found;
	if (cflags & CQE_F_MORE)
		found->punted = 0; /* multishot: the request stays in flight */
	else if (in_table)
		/* Released after the copy above (an atomic exchange is a full
		 * barrier): another CPU may claim the entry at once. */
		__sync_lock_test_and_set(&found->req, 0);
	else
		bpf_map_delete_elem(&inflight, &req);

	__u64 now = batch_clock(FO_CLOCK_COMPLETE, request.ctx, cq_tail);
	__u64 latency = now > request.submit_ns ? now - request.submit_ns : 0;
	count(FO_C_COMPLETED);

	struct fo_io_stats *stats = io_stats_of(request.kind, request.opcode);
	if (stats) {
		stats->ops += 1;
		stats->latency_ns += latency;
		stats->buckets[log2_bucket(latency)] += 1;
		if (res < 0)
			stats->errors += 1;
		else if (moves_data(request.opcode))
			stats->bytes += res;
		if (request.punted)
			stats->punts += 1;
	}
	if (request.command) {
		struct fo_command *figures = command_entry(request.command);
		__u64 tag = fo_command_tag(request.command);
		if (!figures)
			count(FO_C_COMMAND_MISSES);
		else if (charge(&figures->io_ops, tag, 1))
			charge(&figures->io_ns, tag, latency);
	}

	if (res < 0 || latency >= slow_io_ns) {
		struct fo_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
		if (!event) {
			count(FO_C_EVENTS_DROPPED);
			return 0;
		}
		event->type = res < 0 ? FO_EV_FAILED_IO : FO_EV_SLOW_IO;
		event->tid = request.tid;
		event->command = request.command;
		event->duration_ns = latency;
		event->user_data = user_data;
		event->kind = request.kind;
		event->res = res;
		event->opcode = request.opcode;
		event->_pad = 0;
		bpf_ringbuf_submit(event, 0);
	}
	return 0;
}

/* io_uring_complete(struct io_ring_ctx *ctx, void *req,
 *                   struct io_uring_cqe *cqe): typed pointers, read
 * directly. */
SEC("tp_btf/io_uring_complete")
int fo_complete(__u64 *args)
{
	__u64 req = args[1];
	if (!req)
		return 0;
	struct io_ring_ctx *ctx = (struct io_ring_ctx *)args[0];
	struct io_uring_cqe *cqe = (struct io_uring_cqe *)args[2];
	return complete(args[0], req, cqe->user_data, cqe->res, cqe->flags, ctx->rings->cq.tail);
}

/* io_uring_complete(void *ctx, void *req, u64 user_data, int res,
 *                   unsigned cflags, u64 extra1, u64 extra2): the CQE's
 * fields as arguments, the ring as an untyped pointer (a number to the
 * verifier), so its CQ tail is read with a helper. */
SEC("tp_btf/io_uring_complete")
int fo_complete_flat(__u64 *args)
{
	__u64 req = args[1];
	if (!req)
		return 0;
	struct io_ring_ctx *ctx = (struct io_ring_ctx *)args[0];
	__u32 cq_tail = BPF_CORE_READ(ctx, rings, cq.tail);
	return complete(args[0], req, args[2], (int)args[3], (__u32)args[4], cq_tail);
}

SEC("tracepoint/io_uring/io_uring_req_failed")
int fo_failed(struct trace_event_raw_io_uring_req_failed *tp)
{
	__u32 tid;
	if (!current_target(&tid))
		return 0;
	count(FO_C_FAILED);
	/* It never reaches io_uring_submit_req: consume its slot here, or a
	 * later untagged SQE with the same user_data would inherit it. */
	__u32 kind = 0;
	consume_slot(tid, tp->user_data, &kind);
	return 0;
}

SEC("tracepoint/io_uring/io_uring_short_write")
int fo_short_write(void *tp)
{
	__u32 tid;
	if (current_target(&tid))
		count(FO_C_SHORT_WRITES);
	return 0;
}

SEC("tracepoint/io_uring/io_uring_cqe_overflow")
int fo_cqe_overflow(void *tp)
{
	__u32 tid;
	if (current_target(&tid))
		count(FO_C_CQE_OVERFLOWS);
	return 0;
}

/*
 * Off-CPU time. At a switch-out the current task is `prev`: if it belongs to
 * the process and its current-command cell names a command, note the switch
 * in its registration. The matching switch-in is `next`'s, found by its
 * registration. `preempt` and `prev_state` say whether `prev` was preempted
 * or went to sleep.
 */
static __always_inline int switch_task(int preempt, struct task_struct *prev_task,
				       struct task_struct *next_task, unsigned int prev_state)
{
	/* Runs on every switch of the machine: the clock is read only for one
	 * of the process's threads, and at most once. */
	__u64 now = 0;

	__u32 next = next_task->pid;
	/* Only the process's threads have registrations: a field read spares
	 * every other switch of the machine the lookup. */
	struct fo_thread *in = (__u32)next_task->tgid == target_tgid ? thread_of(next) : 0;
	if (in && in->switched.command) {
		struct fo_switch was = in->switched;
		in->switched.command = 0;
		count(FO_C_SWITCH_INS);
		now = bpf_ktime_get_ns();
		__u64 away = now > was.at_ns ? now - was.at_ns : 0;
		__u32 kind = was.kind;
		struct fo_offcpu *figures = bpf_map_lookup_elem(&offcpu, &kind);
		if (!figures) {
			static const struct fo_offcpu zero = {};
			bpf_map_update_elem(&offcpu, &kind, &zero, BPF_NOEXIST);
			figures = bpf_map_lookup_elem(&offcpu, &kind);
		}
		int long_block = was.blocked && away >= block_threshold_ns;
		if (figures) {
			if (was.blocked)
				figures->blocked_ns += away;
			else
				figures->preempted_ns += away;
			figures->switches += 1;
			figures->long_blocks += long_block;
		} else {
			count(FO_C_STATS_FULL);
		}
		struct fo_command *command = command_entry(was.command);
		if (!command)
			count(FO_C_COMMAND_MISSES);
		else
			charge(was.blocked ? &command->blocked_ns : &command->preempted_ns,
			       fo_command_tag(was.command), away);
		if (long_block) {
			struct fo_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
			if (event) {
				__builtin_memset(event, 0, sizeof(*event));
				event->type = FO_EV_BLOCKED_POLL;
				event->tid = next;
				event->command = was.command;
				event->duration_ns = away;
				event->kind = was.kind;
				bpf_ringbuf_submit(event, 0);
			} else {
				count(FO_C_EVENTS_DROPPED);
			}
		}
	}

	/* The task being switched out, as the tracepoint names it. */
	if ((__u32)prev_task->tgid != target_tgid)
		return 0;
	__u32 prev = prev_task->pid;
	struct fo_thread *thread = thread_of(prev);
	if (!thread || !thread->current)
		return 0;
	struct fo_current current;
	if (bpf_probe_read_user(&current, sizeof(current), (const void *)thread->current) != 0) {
		count(FO_C_READ_FAULTS);
		return 0;
	}
	if (!current.command)
		return 0;
	/* Blocked: it went to sleep (a sleeping state in prev_state's low
	 * byte: S, D, ...) rather than being preempted. */
	thread->switched.at_ns = now ? now : bpf_ktime_get_ns();
	thread->switched.kind = (__u32)current.kind;
	thread->switched.blocked = !preempt && (prev_state & 0xff) != 0;
	thread->switched.command = current.command;
	count(FO_C_SWITCH_OUTS);
	return 0;
}

/* sched_switch(bool preempt, struct task_struct *prev,
 *              struct task_struct *next, unsigned int prev_state) */
SEC("tp_btf/sched_switch")
int fo_switch(__u64 *args)
{
	return switch_task((__u8)args[0] != 0, (struct task_struct *)args[1],
			   (struct task_struct *)args[2], (unsigned int)args[3]);
}

/* sched_switch(bool preempt, struct task_struct *prev,
 *              struct task_struct *next): the state is prev's own, still
 * as it was when it was switched out. */
SEC("tp_btf/sched_switch")
int fo_switch_task(__u64 *args)
{
	struct task_struct *prev = (struct task_struct *)args[1];
	unsigned int state;
	if (bpf_core_field_exists(prev->__state))
		state = prev->__state;
	else
		state = (unsigned int)((struct task_struct___state *)prev)->state;
	return switch_task((__u8)args[0] != 0, prev, (struct task_struct *)args[2], state);
}
