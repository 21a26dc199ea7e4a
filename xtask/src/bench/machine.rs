//! The machine and software a run measured: CPU model, cores, kernel, memory, the versions of
//! the implementations and the commit of this repository.

use std::fs;
use std::process::Command;

use super::tunnel::Binaries;
use crate::run;

pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub virtualised: bool,
    pub commit: String,
    pub versions: Vec<(&'static str, String)>,
}

impl Machine {
    pub fn describe(binaries: &Binaries) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = field(&cpuinfo, "model name").unwrap_or("unknown CPU").to_string();
        let virtualised = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .is_some_and(|flags| flags.split_whitespace().any(|flag| flag == "hypervisor"));
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = field(&meminfo, "MemTotal")
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let versions = vec![
            ("wireguard-go", first_line(Command::new(&binaries.wireguard_go).arg("--version"))),
            ("boringtun-cli", first_line(Command::new(&binaries.boringtun).arg("--version"))),
            ("iperf3", first_line(Command::new("iperf3").arg("--version"))),
        ];
        let commit = first_line(Command::new("git").current_dir(run::workspace_root()).args([
            "describe",
            "--always",
            "--dirty",
            "--abbrev=10",
        ]));
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |count| count.get()),
            kernel,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            virtualised,
            commit,
            versions,
        }
    }

    /// Markdown lines for the top of the report.
    pub fn markdown(&self) -> String {
        let versions: Vec<String> =
            self.versions.iter().map(|(name, version)| format!("{name}: {version}")).collect();
        format!(
            "Machine: {} × {} ({}), {:.1} GiB, Linux {}\n\nSoftware: gatewayd {}; {}\n",
            self.cores,
            self.cpu_model,
            if self.virtualised { "virtual machine" } else { "bare metal" },
            self.memory_gib,
            self.kernel,
            self.commit,
            versions.join("; ")
        )
    }
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|line| line.split(':').next().is_some_and(|key| key.trim() == name))
        .and_then(|line| line.split_once(':'))
        .map(|(_, value)| value.trim())
}

fn first_line(command: &mut Command) -> String {
    match run::capture(command) {
        Ok(output) => output.lines().next().unwrap_or_default().trim().to_string(),
        Err(_) => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t\t: fpu hypervisor\n";
        assert_eq!(field(text, "model name"), Some("Some CPU @ 2.0GHz"));
        assert_eq!(field(text, "cache size"), None);
    }
}
