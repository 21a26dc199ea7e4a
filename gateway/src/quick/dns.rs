//! The DNS settings of an interface that is up, handed to the system resolver as wg-quick
//! does: `resolvconf` (openresolv, Debian's resolvconf, or systemd's shim), else
//! systemd-resolved's `resolvectl` directly.

use super::system;
use crate::config::wg_quick::Dns;

/// How the resolver is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    Resolvconf,
    Resolvectl,
}

/// The resolver tool installed here, if any.
pub fn installed() -> Option<Resolver> {
    if system::find_in_path("resolvconf").is_some() {
        Some(Resolver::Resolvconf)
    } else if system::find_in_path("resolvectl").is_some() {
        Some(Resolver::Resolvectl)
    } else {
        None
    }
}

/// The resolver `gateway up` will use for `dns`; checked before anything is created, so a
/// machine without one fails with one clear line instead of half an interface.
pub fn required(dns: &Dns) -> Result<Option<Resolver>, String> {
    if !dns.is_configured() {
        return Ok(None);
    }
    installed().map(Some).ok_or_else(|| {
        "DNS is set but neither resolvconf nor resolvectl is installed: install one, or remove \
         DNS from the configuration"
            .to_string()
    })
}

/// The name resolvconf files an interface's settings under: Debian's resolvconf orders
/// interfaces by name patterns, and wg-quick prefixes the name to sort with the first
/// pattern ending in `*` (e.g. `tun.*` makes `tun.wg0`).
fn resolvconf_name(interface: &str) -> String {
    let order = std::fs::read_to_string("/etc/resolvconf/interface-order").unwrap_or_default();
    let prefix = order
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_suffix('*'))
        .find(|stem| {
            !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(|stem| format!("{stem}."))
        .unwrap_or_default();
    format!("{prefix}{interface}")
}

/// Sets the servers and search domains, exclusively (`-x`: queries go to these servers only,
/// as with wg-quick).
pub fn set(resolver: Resolver, interface: &str, dns: &Dns) -> Result<(), String> {
    match resolver {
        Resolver::Resolvconf => {
            let mut input: String =
                dns.servers.iter().map(|server| format!("nameserver {server}\n")).collect();
            if !dns.search.is_empty() {
                input += &format!("search {}\n", dns.search.join(" "));
            }
            let name = resolvconf_name(interface);
            system::run_with_input("resolvconf", &["-a", &name, "-m", "0", "-x"], Some(&input))?;
        }
        Resolver::Resolvectl => {
            let servers: Vec<String> = dns.servers.iter().map(|s| s.to_string()).collect();
            let mut args = vec!["dns", interface];
            args.extend(servers.iter().map(String::as_str));
            system::run("resolvectl", &args)?;
            // `~.` routes every query to this link: resolvconf's -x, in resolvectl's terms.
            let mut args = vec!["domain", interface, "~."];
            args.extend(dns.search.iter().map(String::as_str));
            system::run("resolvectl", &args)?;
        }
    }
    Ok(())
}

/// Removes what [`set`] set.
pub fn unset(resolver: Resolver, interface: &str) -> Result<(), String> {
    match resolver {
        Resolver::Resolvconf => {
            system::run("resolvconf", &["-d", &resolvconf_name(interface), "-f"]).map(drop)
        }
        Resolver::Resolvectl => system::run("resolvectl", &["revert", interface]).map(drop),
    }
}
