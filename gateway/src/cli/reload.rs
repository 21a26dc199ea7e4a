//! `gateway reload IFACE`: asks the interface's gatewayd to read its configuration file again
//! and apply what changed (`daemon::reload`), over the control socket. It prints what changed,
//! or fails with the daemon's one line naming file, line and field.

use crate::daemon::forward_socket::{self, Request, Response};

pub fn reload(interface: &str) -> Result<(), String> {
    match forward_socket::request(interface, &Request::Reload)? {
        Response::Reloaded(changes) => {
            println!("{changes}");
            Ok(())
        }
        Response::Error(e) => Err(e),
        other => Err(format!("gatewayd answered {other:?}")),
    }
}
