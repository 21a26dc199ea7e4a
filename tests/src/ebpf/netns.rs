//! The eBPF tests' view of the harness's namespaces and of the daemon's TUN: the same
//! [`crate::Netns`] and [`gateway::tun::Tun`], with the panicking interface these tests use
//! (a helper that fails ends the test with a message saying what failed).

use std::fs::File;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    crate::command::run(Command::new(args[0]).args(&args[1..])).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A fresh interface name (see [`crate::unique_ifname`]).
pub fn unique(role: &str) -> String {
    crate::unique_ifname(role).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A harness namespace, deleted on drop.
pub struct Netns {
    inner: crate::Netns,
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        super::require_root();
        let inner = crate::Netns::new(role).unwrap_or_else(|e| panic!("{e:#}"));
        Netns { name: inner.name().to_string(), inner }
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        self.inner.ip(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// A command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        self.inner.run(args[0], &args[1..]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.inner.set_sysctl(key, value).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> crate::Entered {
        self.inner.enter().unwrap_or_else(|e| panic!("{e:#}"))
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        let _in = self.enter();
        gateway::tun::ifindex(name)
            .unwrap_or_else(|| panic!("no interface {name} in {}", self.name))
    }
}

/// A TUN device created (and kept up, with carrier) by holding its descriptor: the daemon's
/// own [`gateway::tun::Tun`], read without blocking so tests can drain it.
pub struct Tun(gateway::tun::Tun);

impl Deref for Tun {
    type Target = gateway::tun::Tun;
    fn deref(&self) -> &gateway::tun::Tun {
        &self.0
    }
}

impl Tun {
    /// Creates the TUN in the calling thread's namespace.
    pub fn open(name: &str) -> Tun {
        let tun = gateway::tun::Tun::create(name, 1).unwrap_or_else(|e| panic!("TUN {name}: {e}"));
        let fd = tun.queues()[0].as_raw_fd();
        // SAFETY: fcntl on a descriptor the TUN owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Tun(tun)
    }

    pub fn file(&self) -> &File {
        &self.0.queues()[0]
    }

    /// Every packet waiting on the descriptor.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = gateway::tun::TunQueue(self.file()).read_packet(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }
}
