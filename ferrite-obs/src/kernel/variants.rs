//! Which programs fit the running kernel, chosen from its BTF.
//!
//! The object holds a variant per layout of each hot tracepoint's arguments
//! (see `ferrite_obs.bpf.c`); [`choose`] reads the kernel's prototypes and
//! picks, for each figure, the variant whose reads the kernel's arguments
//! allow, never by release number: distributions backport tracepoint
//! changes. What no variant fits is reported as unavailable, with what the
//! kernel lacks.

use super::btf::{self, Arg, Tracepoints};
use crate::kernel::{KernelFigure, UnavailableFigure};

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    /// A BTF tracepoint (`tp_btf`): the kernel's own arguments, no record
    /// formatted; for the programs that run on every request or switch.
    Btf(&'static str),
    /// A classic tracepoint (category, name), reading the formatted record.
    Classic(&'static str, &'static str),
}

impl Hook {
    pub(super) fn describe(self) -> String {
        match self {
            Hook::Btf(name) => format!("tp_btf/{name}"),
            Hook::Classic(category, name) => format!("{category}/{name}"),
        }
    }
}

/// A program to load and the hook to attach it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Choice {
    pub(super) program: &'static str,
    pub(super) hook: Hook,
}

impl Choice {
    /// As status lists it: `hook (program)`.
    pub(super) fn describe(self) -> String {
        format!("{} ({})", self.hook.describe(), self.program)
    }
}

/// The programs this kernel runs and the figures it cannot give.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) programs: Vec<Choice>,
    pub(super) unavailable: Vec<UnavailableFigure>,
}

/// Every program of the object, for reading the kernel's counts of their
/// runs (the ones not loaded have no descriptor and count nothing).
pub(super) const ALL_PROGRAMS: [&str; 9] = [
    "fo_submit",
    "fo_complete",
    "fo_complete_flat",
    "fo_switch",
    "fo_switch_task",
    "fo_punt",
    "fo_failed",
    "fo_short_write",
    "fo_cqe_overflow",
];

/// The classic tracepoints: each gives one counter, and punts need the
/// submission and completion programs too.
const CLASSIC: [(&str, &str, KernelFigure); 4] = [
    ("fo_punt", "io_uring_queue_async_work", KernelFigure::Punts),
    (
        "fo_failed",
        "io_uring_req_failed",
        KernelFigure::FailedSubmissions,
    ),
    (
        "fo_short_write",
        "io_uring_short_write",
        KernelFigure::ShortWrites,
    ),
    (
        "fo_cqe_overflow",
        "io_uring_cqe_overflow",
        KernelFigure::CqeOverflows,
    ),
];

/// The programs that fit `tracepoints`, the running kernel's.
pub(super) fn choose(tracepoints: &Tracepoints) -> Plan {
    let mut plan = Plan::default();
    let mut missing = |figure, reason: &str| {
        plan.unavailable.push(UnavailableFigure {
            figure,
            reason: reason.to_owned(),
        })
    };
    let io = submit(tracepoints).and_then(|s| Ok((s, complete(tracepoints)?)));
    let io_ok = io.is_ok();
    let mut programs = Vec::new();
    match io {
        Ok((submit, complete)) => programs.extend([submit, complete]),
        Err(reason) => {
            for figure in [
                KernelFigure::AttributedRequests,
                KernelFigure::IoLatency,
                KernelFigure::Punts,
            ] {
                missing(figure, &reason);
            }
        }
    }
    match switch(tracepoints) {
        Ok(choice) => programs.push(choice),
        Err(reason) => {
            missing(KernelFigure::OffCpu, &reason);
            missing(KernelFigure::BlockingPolls, &reason);
        }
    }
    for (program, tracepoint, figure) in CLASSIC {
        if figure == KernelFigure::Punts && !io_ok {
            continue; // already unavailable, for the reason above
        }
        if tracepoints.has(tracepoint) {
            programs.push(Choice {
                program,
                hook: Hook::Classic("io_uring", tracepoint),
            });
        } else {
            missing(
                figure,
                &format!("this kernel has no tracepoint io_uring/{tracepoint}"),
            );
        }
    }
    plan.programs = programs;
    plan
}

/// The submission program: the request is the first argument of
/// `io_uring_submit_req` (Linux 6.3 on) and of `io_uring_submit_sqe` in its
/// `(struct io_kiocb *req, bool force_nonblock)` form.
fn submit(tracepoints: &Tracepoints) -> Result<Choice, String> {
    let mut seen = Vec::new();
    for name in ["io_uring_submit_req", "io_uring_submit_sqe"] {
        let Some(args) = tracepoints.args(name) else {
            continue;
        };
        if args.first() == Some(&Arg::Struct("io_kiocb".to_owned())) {
            return Ok(Choice {
                program: "fo_submit",
                hook: Hook::Btf(name),
            });
        }
        seen.push(format!("{name}{}", btf::describe(args)));
    }
    Err(if seen.is_empty() {
        "this kernel has no io_uring submission tracepoint (io_uring_submit_req or \
         io_uring_submit_sqe): it was built without CONFIG_IO_URING"
            .to_owned()
    } else {
        format!(
            "this kernel's {} does not pass the request (struct io_kiocb *) as its first \
             argument, which attribution reads (Linux 6.1 and later do)",
            seen.join(" and ")
        )
    })
}

/// The completion program for `io_uring_complete`'s layout: the CQE
/// (`fo_complete`), or its fields as arguments after the ring and the
/// request (`fo_complete_flat`).
fn complete(tracepoints: &Tracepoints) -> Result<Choice, String> {
    const NAME: &str = "io_uring_complete";
    let Some(args) = tracepoints.args(NAME) else {
        return Err(format!(
            "this kernel has no tracepoint {NAME}: it was built without CONFIG_IO_URING"
        ));
    };
    let pointer = |arg: Option<&Arg>| matches!(arg, Some(Arg::Struct(_) | Arg::Opaque));
    let program = match args {
        [ctx, req, Arg::Struct(cqe)]
            if pointer(Some(ctx)) && pointer(Some(req)) && cqe == "io_uring_cqe" =>
        {
            "fo_complete"
        }
        [ctx, req, Arg::Scalar, Arg::Scalar, Arg::Scalar, ..]
            if pointer(Some(ctx)) && pointer(Some(req)) =>
        {
            "fo_complete_flat"
        }
        _ => {
            return Err(format!(
                "this kernel's {NAME}{} passes neither (ctx, req, cqe) nor (ctx, req, \
                 user_data, res, cflags): completions cannot be matched to their requests \
                 (Linux 6.1 and later pass one or the other)",
                btf::describe(args)
            ));
        }
    };
    Ok(Choice {
        program,
        hook: Hook::Btf(NAME),
    })
}

/// The scheduler program: with `prev_state` as an argument (Linux 5.18 on,
/// `fo_switch`) or read from the task (`fo_switch_task`).
fn switch(tracepoints: &Tracepoints) -> Result<Choice, String> {
    const NAME: &str = "sched_switch";
    let Some(args) = tracepoints.args(NAME) else {
        return Err(format!("this kernel has no tracepoint {NAME} in its BTF"));
    };
    let task = Arg::Struct("task_struct".to_owned());
    let program = match args {
        [Arg::Scalar, prev, next, Arg::Scalar] if *prev == task && *next == task => "fo_switch",
        [Arg::Scalar, prev, next] if *prev == task && *next == task => "fo_switch_task",
        _ => {
            return Err(format!(
                "this kernel's {NAME}{} is not (preempt, prev, next[, prev_state])",
                btf::describe(args)
            ));
        }
    };
    Ok(Choice {
        program,
        hook: Hook::Btf(NAME),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(name: &str) -> Arg {
        Arg::Struct(name.to_owned())
    }

    /// The prototypes of the tracepoints the programs use, as kernels of
    /// each layout have them (from their BTF), with the classic ones.
    fn kernel(submit: (&str, Vec<Arg>), complete: Vec<Arg>, switch: Vec<Arg>) -> Tracepoints {
        let classic: Vec<(&str, Vec<Arg>)> = CLASSIC
            .iter()
            .map(|(_, name, _)| (*name, vec![Arg::Opaque]))
            .collect();
        let all: Vec<(&str, Vec<Arg>)> = [
            submit,
            ("io_uring_complete", complete),
            ("sched_switch", switch),
        ]
        .into_iter()
        .chain(classic)
        .collect();
        let borrowed: Vec<(&str, &[Arg])> = all.iter().map(|(n, a)| (*n, a.as_slice())).collect();
        Tracepoints::from_args(&borrowed)
    }

    fn programs(plan: &Plan) -> Vec<String> {
        plan.programs.iter().map(|c| c.describe()).collect()
    }

    fn switch_with_state() -> Vec<Arg> {
        vec![
            Arg::Scalar,
            ptr("task_struct"),
            ptr("task_struct"),
            Arg::Scalar,
        ]
    }

    #[test]
    fn each_kernel_layout_gets_the_variant_that_reads_it() {
        use Arg::{Opaque, Scalar};
        let flat = vec![Opaque, Opaque, Scalar, Scalar, Scalar, Scalar, Scalar];
        // 6.1: io_uring_submit_sqe(req, force_nonblock), flat completion.
        let v6_1 = kernel(
            ("io_uring_submit_sqe", vec![ptr("io_kiocb"), Scalar]),
            flat.clone(),
            switch_with_state(),
        );
        // 6.12: io_uring_submit_req(req), flat completion.
        let v6_12 = kernel(
            ("io_uring_submit_req", vec![ptr("io_kiocb")]),
            flat,
            switch_with_state(),
        );
        // 6.18: the completion passes its CQE.
        let v6_18 = kernel(
            ("io_uring_submit_req", vec![ptr("io_kiocb")]),
            vec![ptr("io_ring_ctx"), Opaque, ptr("io_uring_cqe")],
            switch_with_state(),
        );
        for (tracepoints, submit, complete) in [
            (
                &v6_1,
                "tp_btf/io_uring_submit_sqe (fo_submit)",
                "tp_btf/io_uring_complete (fo_complete_flat)",
            ),
            (
                &v6_12,
                "tp_btf/io_uring_submit_req (fo_submit)",
                "tp_btf/io_uring_complete (fo_complete_flat)",
            ),
            (
                &v6_18,
                "tp_btf/io_uring_submit_req (fo_submit)",
                "tp_btf/io_uring_complete (fo_complete)",
            ),
        ] {
            let plan = choose(tracepoints);
            assert_eq!(
                programs(&plan),
                [
                    submit,
                    complete,
                    "tp_btf/sched_switch (fo_switch)",
                    "io_uring/io_uring_queue_async_work (fo_punt)",
                    "io_uring/io_uring_req_failed (fo_failed)",
                    "io_uring/io_uring_short_write (fo_short_write)",
                    "io_uring/io_uring_cqe_overflow (fo_cqe_overflow)",
                ]
            );
            assert_eq!(plan.unavailable, []);
        }
    }

    #[test]
    fn a_kernel_whose_tracepoints_pass_no_request_keeps_off_cpu_only() {
        use Arg::{Opaque, Scalar};
        // 5.10: io_uring_submit_sqe(ctx, opcode, user_data, ...),
        // io_uring_complete(ctx, user_data, res), sched_switch without
        // prev_state, and none of the classic ones but the punt's.
        let tracepoints = Tracepoints::from_args(&[
            (
                "io_uring_submit_sqe",
                &[Opaque, Scalar, Scalar, Scalar, Scalar],
            ),
            ("io_uring_complete", &[Opaque, Scalar, Scalar]),
            ("io_uring_queue_async_work", &[Opaque]),
            (
                "sched_switch",
                &[Scalar, ptr("task_struct"), ptr("task_struct")],
            ),
        ]);
        let plan = choose(&tracepoints);
        assert_eq!(programs(&plan), ["tp_btf/sched_switch (fo_switch_task)"]);
        let figures: Vec<KernelFigure> = plan.unavailable.iter().map(|u| u.figure).collect();
        assert_eq!(
            figures,
            [
                KernelFigure::AttributedRequests,
                KernelFigure::IoLatency,
                KernelFigure::Punts,
                KernelFigure::FailedSubmissions,
                KernelFigure::ShortWrites,
                KernelFigure::CqeOverflows,
            ]
        );
        assert_eq!(
            plan.unavailable[0].reason,
            "this kernel's io_uring_submit_sqe(void *, scalar, scalar, scalar, scalar) does not \
             pass the request (struct io_kiocb *) as its first argument, which attribution reads \
             (Linux 6.1 and later do)"
        );
    }

    #[test]
    fn a_completion_without_the_request_makes_io_figures_unavailable() {
        use Arg::{Opaque, Scalar};
        // A completion that passes no request, as 5.15's
        // io_uring_complete(ctx, user_data, res, cflags) does.
        let tracepoints = kernel(
            ("io_uring_submit_sqe", vec![ptr("io_kiocb"), Scalar]),
            vec![Opaque, Scalar, Scalar, Scalar],
            switch_with_state(),
        );
        let plan = choose(&tracepoints);
        assert!(
            plan.unavailable[0].reason.starts_with(
                "this kernel's io_uring_complete(void *, scalar, scalar, scalar) passes neither"
            ),
            "{plan:?}"
        );
        assert!(
            !programs(&plan).iter().any(|p| p.contains("punt")),
            "{plan:?}"
        );
    }
}
