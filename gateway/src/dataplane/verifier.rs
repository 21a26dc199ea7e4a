//! What the kernel's verifier made of each program: the instructions it processed (the cost
//! its 1,000,000-instruction limit applies to) or why it refused the program, and what the
//! data plane does without it.

use std::fmt;

use super::programs::Program;

/// The most instructions the verifier processes for one program before it gives up.
pub const INSTRUCTION_LIMIT: u32 = 1_000_000;

/// What a program may cost: a quarter of the limit. The count depends on the kernel's
/// verifier and on the object the toolchain produced, so a program near the limit on one
/// machine is over it on the next; the budget keeps a margin of four.
pub const INSTRUCTION_BUDGET: u32 = INSTRUCTION_LIMIT / 4;

/// One program's load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramReport {
    pub program: Program,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Loaded; the verifier processed this many instructions (the kernel's
    /// `verified_insns`, absent on kernels before 5.16).
    Loaded { instructions: Option<u32> },
    /// Refused: the syscall's error and what the verifier said last.
    Rejected { reason: String },
}

impl ProgramReport {
    pub fn loaded(&self) -> bool {
        matches!(self.verdict, Verdict::Loaded { .. })
    }

    /// The verifier's reason from its log: the error's line and the statistics line.
    pub fn rejected(program: Program, error: &std::io::Error, log: &str) -> ProgramReport {
        let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        // The log ends with statistics (time, stack depth, the counts); the verifier's
        // complaint is the last line before them.
        let is_statistics = |line: &&&str| {
            ["processed ", "verification time ", "stack depth "].iter().any(|p| line.starts_with(p))
        };
        let stats = lines.iter().rev().find(|l| l.starts_with("processed "));
        let last = lines.iter().rev().find(|l| !is_statistics(l));
        let mut reason = error.to_string();
        for detail in [last, stats].into_iter().flatten() {
            reason.push_str("; ");
            reason.push_str(detail);
        }
        ProgramReport { program, verdict: Verdict::Rejected { reason } }
    }
}

impl fmt::Display for ProgramReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.program.name();
        match &self.verdict {
            Verdict::Loaded { instructions: Some(n) } => write!(
                f,
                "{name}: loaded, {n} instructions verified ({:.1}% of the verifier's limit)",
                f64::from(*n) * 100.0 / f64::from(INSTRUCTION_LIMIT)
            ),
            Verdict::Loaded { instructions: None } => write!(f, "{name}: loaded"),
            Verdict::Rejected { reason } => write!(
                f,
                "{name}: rejected by the kernel's verifier ({reason}); instead {}",
                self.program.fallback()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_names_the_program_the_reason_and_the_fallback() {
        // The tail of the log a fresh machine printed for wg_tx_tun before it was split up.
        let log = "1234: (85) call bpf_loop#181\n\
                   BPF program is too large. Processed 1000001 insn\n\
                   verification time 1096305 usec\n\
                   stack depth 224+32+208+120+16\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 35 total_states \
                   10909 peak_states 1027 mark_read 0\n";
        let error = std::io::Error::from_raw_os_error(libc::E2BIG);
        let report = ProgramReport::rejected(Program::TxTun, &error, log);
        let line = report.to_string();
        assert!(!report.loaded());
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(line.starts_with("wg_tx_tun: rejected by the kernel's verifier"), "{line}");
        assert!(line.contains("BPF program is too large"), "{line}");
        assert!(line.contains("processed 1000001 insns"), "{line}");
        assert!(line.ends_with(Program::TxTun.fallback()), "{line}");
    }

    #[test]
    fn a_load_reports_its_share_of_the_limit() {
        let report = ProgramReport {
            program: Program::RxXdp,
            verdict: Verdict::Loaded { instructions: Some(125_000) },
        };
        assert_eq!(
            report.to_string(),
            "wg_rx_xdp: loaded, 125000 instructions verified (12.5% of the verifier's limit)"
        );
    }
}
