//! `gateway forward`, run as an operator runs it: on the VPS (inside its namespace) against
//! gatewayd's interface. Every call returns an error carrying the command and its stderr when
//! the CLI exits non-zero.

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::gatewayd::gateway_cli_binary;
use crate::{Netns, command};

/// The forwards of one gatewayd interface.
#[derive(Debug, Clone, Copy)]
pub struct Forwards<'a> {
    netns: &'a Netns,
    ifname: &'a str,
}

impl<'a> Forwards<'a> {
    pub fn new(netns: &'a Netns, ifname: &'a str) -> Forwards<'a> {
        Forwards { netns, ifname }
    }

    /// `gateway forward add IFNAME args...`, e.g. `["tcp", "2222", "--to", "192.168.60.10:22"]`.
    pub fn add(&self, args: &[&str]) -> Result<()> {
        self.run("add", args).map(drop)
    }

    /// `gateway forward remove IFNAME args...`, e.g. `["tls", "443", "--sni", "a.example.com"]`.
    pub fn remove(&self, args: &[&str]) -> Result<()> {
        self.run("remove", args).map(drop)
    }

    /// `gateway forward list IFNAME`.
    pub fn list(&self) -> Result<String> {
        self.run("list", &[])
    }

    /// `gateway forward list IFNAME --json`, parsed.
    pub fn list_json(&self) -> Result<Value> {
        let text = self.run("list", &["--json"])?;
        serde_json::from_str(&text).with_context(|| {
            format!("`gateway forward list {} --json` printed {text:?}", self.ifname)
        })
    }

    /// Runs `gateway forward <verb> IFNAME args...` and returns its stdout.
    pub fn run(&self, verb: &str, args: &[&str]) -> Result<String> {
        let mut cli = self.netns.command(gateway_cli_binary()?);
        cli.args(["forward", verb, self.ifname]).args(args);
        command::run(&mut cli)
    }
}
