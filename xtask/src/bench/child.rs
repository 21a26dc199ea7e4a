//! Children that must not outlive the benchmark: an interrupted run exits from the harness's
//! signal handler, which stops the daemons it tracks and deletes the namespaces, but not an
//! iperf3 client or a generator it does not know about (an iperf3 client whose server vanished
//! with its namespace waits for minutes). These get SIGKILL when this process dies.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else; `ip netns
    // exec` keeps the setting across its exec of the real program.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        })
    }
}
