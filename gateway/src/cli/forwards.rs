//! `gateway forwards IF` and `gateway forward add/list/remove`: the entry point's forwards
//! through the daemon's control socket (`daemon::forward_socket`).

use crate::daemon::forward_socket::{self, Request, Response, SelectorRecord};
use crate::entry::forward::{Forward, Selector, SelectorArgs};
use crate::entry::store::ForwardRecord;

use super::table::Table;

/// `forward add`: checked here too, so that a typo is named without a daemon to ask.
pub fn add(interface: &str, args: &SelectorArgs<'_>, to: &str) -> Result<(), String> {
    let forward = Forward::parse(args, to).map_err(|e| e.to_string())?;
    match forward_socket::request(interface, &Request::Add(ForwardRecord::from(&forward)))? {
        Response::Added(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// `forward remove`: the forward named as it was added (without --to).
pub fn remove(interface: &str, args: &SelectorArgs<'_>) -> Result<(), String> {
    Selector::parse(args).map_err(|e| e.to_string())?;
    let record = SelectorRecord {
        protocol: args.protocol.to_string(),
        ports: args.ports.to_string(),
        listen: args.listen.map(str::to_string),
        sni: args.sni.map(str::to_string),
        host: args.host.map(str::to_string),
        default: args.default,
    };
    match forward_socket::request(interface, &Request::Remove(record))? {
        Response::Removed(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// `forwards` and `forward list`: the table, or the records as JSON.
pub fn list(interface: &str, json: bool) -> Result<(), String> {
    match forward_socket::request(interface, &Request::List)? {
        Response::Forwards(forwards) if json => super::print_json(&forwards),
        Response::Forwards(forwards) => {
            print!("{}", forward_table(&forwards, ""));
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// The daemon's error line, or what it answered instead of what was asked.
fn unexpected(response: Response) -> String {
    match response {
        Response::Error(e) => e,
        other => format!("gatewayd answered {other:?}"),
    }
}

/// The forwards as an aligned table, each line after `indent`; nothing for none.
pub fn forward_table(forwards: &[ForwardRecord], indent: &str) -> String {
    let mut table = Table::new(&["PROTO", "PORTS", "LISTEN", "NAME", "TO"]);
    for f in forwards {
        let name = match (&f.sni, &f.host, f.default) {
            (Some(name), _, _) | (_, Some(name), _) => name.clone(),
            (_, _, true) => "(default)".into(),
            _ => "-".into(),
        };
        let listen = f.listen.clone().unwrap_or_else(|| "*".into());
        table.row(vec![f.protocol.clone(), f.ports.clone(), listen, name, f.to.clone()]);
    }
    table.render(indent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(protocol: &str, ports: &str, to: &str) -> ForwardRecord {
        ForwardRecord {
            protocol: protocol.into(),
            ports: ports.into(),
            listen: None,
            sni: None,
            host: None,
            default: false,
            to: to.into(),
        }
    }

    #[test]
    fn the_forwards_list_is_an_aligned_table() {
        let forwards = [
            record("tcp", "8000-8010", "10.0.0.2:9000"),
            ForwardRecord {
                listen: Some("192.0.2.1".into()),
                sni: Some("*.example.com".into()),
                ..record("tls", "443", "10.0.0.3:443")
            },
            ForwardRecord { default: true, ..record("http", "80", "[fd00::4]:80") },
        ];
        assert_eq!(
            forward_table(&forwards, ""),
            "PROTO  PORTS      LISTEN     NAME           TO\n\
             tcp    8000-8010  *          -              10.0.0.2:9000\n\
             tls    443        192.0.2.1  *.example.com  10.0.0.3:443\n\
             http   80         *          (default)      [fd00::4]:80\n"
        );
        assert_eq!(forward_table(&[], "  "), "");
    }
}
