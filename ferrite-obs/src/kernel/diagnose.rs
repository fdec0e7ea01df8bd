//! Why a load step failed, and what fixes it: a missing capability, a
//! verifier rejection, a missing tracepoint or BTF each read differently
//! from the same errno (a verifier rejection is EACCES too: its log tells
//! it apart).

use std::error::Error as StdError;
use std::io;

use crate::kernel::{FailureCause, LoadStep};

/// A failed step: what it was, what kind of failure, what was said, and
/// what fixes it.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) step: LoadStep,
    pub(super) cause: FailureCause,
    pub(super) error: String,
    pub(super) fix: String,
}

/// The capability grant a fix ends with, for the capabilities this process
/// lacks (empty when it lacks none).
fn grant() -> String {
    let missing = missing_capabilities();
    if missing.is_empty() {
        return String::new();
    }
    format!(
        "; this process lacks {}: run as root, or grant them (`setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep BINARY`, or AmbientCapabilities= in a systemd unit)",
        missing.join(", ")
    )
}

/// The kernel release, as `uname -r` prints it.
pub(super) fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|e| format!("(unknown: /proc/sys/kernel/osrelease: {e})"))
}

/// The kernel's BTF could not be read or parsed.
pub(super) fn missing_btf(path: &str, error: &dyn std::fmt::Display) -> Failure {
    Failure {
        step: LoadStep::ReadBtf,
        cause: FailureCause::MissingBtf,
        error: format!("reading the kernel's BTF from {path}: {error}"),
        fix: "the kernel view reads the kernel's types and tracepoint arguments from its BTF: \
              boot a kernel built with CONFIG_DEBUG_INFO_BTF=y, which provides \
              /sys/kernel/btf/vmlinux (the stock kernels of Debian 11+, Ubuntu 20.10+, \
              RHEL 8.2+ and Fedora are)"
            .to_owned(),
    }
}

/// No program fits this kernel: every figure is unavailable, for `reasons`.
pub(super) fn nothing_fits(reasons: &[String]) -> Failure {
    Failure {
        step: LoadStep::ChoosePrograms,
        cause: FailureCause::MissingTracepoint,
        error: reasons.join("; "),
        fix: "the kernel view needs the io_uring tracepoints (CONFIG_IO_URING) or the \
              scheduler's sched_switch in the kernel's BTF: run Linux 6.1 or later as \
              distributions build it (see docs/operations.md for the kernels it is tested on)"
            .to_owned(),
    }
}

/// A step failed because the embedded object is not what this runtime
/// expects.
pub(super) fn object_mismatch(step: LoadStep, error: String) -> Failure {
    Failure {
        step,
        cause: FailureCause::Other,
        error,
        fix: "rebuild ferrite-obs-bpf: the object and this runtime disagree".to_owned(),
    }
}

pub(super) fn mapping_failure(what: &str, error: &io::Error) -> Failure {
    Failure {
        step: LoadStep::CreateMaps,
        cause: FailureCause::Other,
        error: format!("mapping {what} into memory: {error}"),
        fix: "the kernel view needs BPF_F_MMAPABLE arrays (Linux 5.5 or later)".to_owned(),
    }
}

/// A load error's message, at most about 2,000 bytes: the verifier log can
/// run to thousands of lines, so keep its start (the failed call) and its
/// end, where the verifier says what it rejected.
pub(super) fn abridge(message: String) -> String {
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

/// The helper number aya writes into an instruction whose CO-RE relocation
/// found nothing in the kernel's BTF (the verifier reports a call to it).
const POISONED_CALL: &str = "unknown#195896080";

/// Program `program` failed to load: rejected by the verifier (it said
/// why), or refused before the verifier ran (a capability).
pub(super) fn load_failure(program: &str, error: &aya::programs::ProgramError) -> Failure {
    if let aya::programs::ProgramError::LoadError { verifier_log, .. } = error {
        let log = verifier_log.to_string();
        if !log.trim().is_empty() {
            let why = if log.contains(POISONED_CALL) {
                "it reads a kernel structure field that this kernel's BTF does not have"
            } else {
                "the log in `error` says which instruction and why"
            };
            return Failure {
                step: LoadStep::LoadProgram,
                cause: FailureCause::VerifierRejected,
                error: abridge(format!("program {program}: {}", chain(error))),
                fix: format!(
                    "the kernel's verifier rejected program {program} on Linux {} ({why}): \
                     no capability or setting fixes it; this is a ferrite-obs defect for this \
                     kernel, report it with this status",
                    release()
                ),
            };
        }
    }
    let mut failure = failure(LoadStep::LoadProgram, error);
    failure.error = format!("program {program}: {}", failure.error);
    failure
}

/// `error` and its sources, each said once.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}

/// A failed step, with the cause and fix that the error and the process's
/// capabilities point to.
pub(super) fn failure(step: LoadStep, error: &(dyn StdError + 'static)) -> Failure {
    let mut errno = None;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        cause = e.source();
    }
    let message = abridge(chain(error));
    let grant = grant();
    let permission = matches!(errno, Some(libc::EPERM | libc::EACCES));
    let tracefs = super::TRACEFS;
    let (cause, fix) = match step {
        LoadStep::CreateMaps if permission => (
            FailureCause::MissingCapability,
            format!(
                "creating BPF maps needs CAP_BPF (kernel.unprivileged_bpf_disabled forbids it otherwise){grant}"
            ),
        ),
        LoadStep::LoadProgram if permission => (
            FailureCause::MissingCapability,
            format!("loading tracing programs needs CAP_PERFMON and CAP_BPF{grant}"),
        ),
        LoadStep::Attach if permission || message.contains("tracefs") => (
            FailureCause::MissingCapability,
            format!(
                "attaching to tracepoints needs read access to tracefs ({tracefs}): CAP_DAC_READ_SEARCH{grant}"
            ),
        ),
        LoadStep::Attach if errno == Some(libc::ENOENT) => (
            FailureCause::MissingTracepoint,
            "the kernel's BTF names a tracepoint that tracefs does not list: boot the kernel \
             this BTF belongs to"
                .to_owned(),
        ),
        LoadStep::CreateMaps => (
            FailureCause::Other,
            format!(
                "the kernel refused the maps: the kernel view needs Linux 5.8 or later \
                 (ring buffers, BPF_F_MMAPABLE arrays){grant}"
            ),
        ),
        _ => (FailureCause::Other, format!("see the error{grant}")),
    };
    Failure {
        step,
        cause,
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

#[cfg(test)]
mod tests {
    use super::{abridge, load_failure};
    use crate::kernel::{FailureCause, LoadStep};
    use aya::programs::ProgramError;
    use aya_obj::VerifierLog;

    fn load_error(errno: i32, log: &str) -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: VerifierLog::new(log.to_owned()),
        }
    }

    #[test]
    fn eacces_with_a_verifier_log_is_a_rejection_not_a_missing_capability() {
        // What 6.12 said of the completion program built for 6.18's layout.
        let log = "; unsigned cflags = cqe->flags; @ ferrite_obs.bpf.c:547\n\
                   12: (61) r2 = *(u32 *)(r1 +12)\nR1 invalid mem access 'scalar'\n\
                   processed 40 insns";
        let failure = load_failure("fo_complete", &load_error(libc::EACCES, log));
        assert_eq!(failure.step, LoadStep::LoadProgram);
        assert_eq!(failure.cause, FailureCause::VerifierRejected);
        assert!(
            failure.error.starts_with("program fo_complete: "),
            "{}",
            failure.error
        );
        assert!(
            failure.error.contains("invalid mem access 'scalar'"),
            "{}",
            failure.error
        );
        assert!(
            failure.fix.contains("no capability or setting fixes it"),
            "{}",
            failure.fix
        );
        assert!(!failure.fix.contains("CAP_PERFMON"), "{}", failure.fix);
    }

    #[test]
    fn an_unresolved_field_is_named_as_such() {
        let log = "0: (85) call unknown#195896080\ninvalid func unknown#195896080";
        let failure = load_failure("fo_switch_task", &load_error(libc::EINVAL, log));
        assert_eq!(failure.cause, FailureCause::VerifierRejected);
        assert!(
            failure
                .fix
                .contains("field that this kernel's BTF does not have"),
            "{}",
            failure.fix
        );
    }

    #[test]
    fn eperm_without_a_log_is_a_missing_capability() {
        let failure = load_failure("fo_submit", &load_error(libc::EPERM, ""));
        assert_eq!(failure.cause, FailureCause::MissingCapability);
        assert!(
            failure
                .fix
                .starts_with("loading tracing programs needs CAP_PERFMON and CAP_BPF")
        );
    }

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
