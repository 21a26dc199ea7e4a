//! Printing replies the way wireguard-go does, and the client side (printing `set` requests,
//! reading `get` replies) for our own tools and tests.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::error::UapiError;
use super::super::key::Key;
use super::super::values::{format_prefix, parse_decimal, parse_endpoint, parse_key, parse_prefix};
use super::{AllowedIpChange, DeviceSnapshot, DeviceUpdate, PROTOCOL_VERSION, PeerSnapshot};

/// The end of every reply: `errno=N` and a blank line.
pub fn format_errno(errno: i32) -> String {
    format!("errno={errno}\n\n")
}

/// The whole reply to `get=1`, in wireguard-go's order, ending with `errno=0` and a blank
/// line.
pub fn format_get_response(snapshot: &DeviceSnapshot) -> String {
    let mut out = String::with_capacity(256 + snapshot.peers.len() * 512);
    if let Some(key) = snapshot.private_key.filter(|key| !key.is_zero()) {
        line(&mut out, "private_key", key.to_hex());
    }
    if snapshot.listen_port != 0 {
        line(&mut out, "listen_port", snapshot.listen_port);
    }
    if snapshot.fwmark != 0 {
        line(&mut out, "fwmark", snapshot.fwmark);
    }
    for peer in &snapshot.peers {
        format_peer(&mut out, peer);
    }
    out.push_str(&format_errno(0));
    out
}

fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

fn format_peer(out: &mut String, peer: &PeerSnapshot) {
    line(out, "public_key", peer.public_key.to_hex());
    line(out, "preshared_key", peer.preshared_key.unwrap_or(Key::ZERO).to_hex());
    line(out, "protocol_version", PROTOCOL_VERSION);
    if let Some(endpoint) = peer.endpoint {
        line(out, "endpoint", endpoint);
    }
    let (secs, nanos) = handshake_fields(peer.last_handshake);
    line(out, "last_handshake_time_sec", secs);
    line(out, "last_handshake_time_nsec", nanos);
    line(out, "tx_bytes", peer.tx_bytes);
    line(out, "rx_bytes", peer.rx_bytes);
    line(out, "persistent_keepalive_interval", peer.persistent_keepalive_interval);
    for prefix in &peer.allowed_ips {
        line(out, "allowed_ip", format_prefix(prefix));
    }
}

/// A whole `set=1` request for `update`, as `wg` would send it.
pub fn format_set_request(update: &DeviceUpdate) -> String {
    let mut out = String::from("set=1\n");
    if let Some(key) = update.private_key {
        line(&mut out, "private_key", key.to_hex());
    }
    if let Some(port) = update.listen_port {
        line(&mut out, "listen_port", port);
    }
    if let Some(mark) = update.fwmark {
        line(&mut out, "fwmark", mark);
    }
    if update.replace_peers {
        line(&mut out, "replace_peers", "true");
    }
    for peer in &update.peers {
        line(&mut out, "public_key", peer.public_key.to_hex());
        if peer.remove {
            line(&mut out, "remove", "true");
        }
        if peer.update_only {
            line(&mut out, "update_only", "true");
        }
        if let Some(key) = peer.preshared_key {
            line(&mut out, "preshared_key", key.to_hex());
        }
        if let Some(endpoint) = peer.endpoint {
            line(&mut out, "endpoint", endpoint);
        }
        if let Some(interval) = peer.persistent_keepalive_interval {
            line(&mut out, "persistent_keepalive_interval", interval);
        }
        for change in &peer.allowed_ips {
            match change {
                AllowedIpChange::RemoveAll => line(&mut out, "replace_allowed_ips", "true"),
                AllowedIpChange::Add(prefix) => line(&mut out, "allowed_ip", format_prefix(prefix)),
                AllowedIpChange::Remove(prefix) => {
                    line(&mut out, "allowed_ip", format_args!("-{}", format_prefix(prefix)))
                }
            }
        }
    }
    out.push('\n');
    out
}

/// The `key=value` lines of a reply, before its `errno` line.
type ReplyLines<'a> = Vec<(&'a str, &'a str)>;

/// Splits a reply into its `key=value` lines up to the blank line, and returns the value of
/// its `errno` line (which must come last).
fn reply_lines(reply: &str) -> Result<(ReplyLines<'_>, i32), UapiError> {
    let (body, _) = reply.split_once("\n\n").ok_or(UapiError::Incomplete)?;
    let mut lines = Vec::new();
    for text in body.split('\n') {
        let pair = text
            .split_once('=')
            .ok_or_else(|| UapiError::MalformedLine { line: text.to_owned() })?;
        lines.push(pair);
    }
    match lines.pop() {
        Some(("errno", value)) => {
            let errno = value
                .parse::<i32>()
                .map_err(|_| UapiError::invalid("errno", value, "not an integer"))?;
            Ok((lines, errno))
        }
        _ => Err(UapiError::MalformedLine { line: "reply does not end with errno=".to_owned() }),
    }
}

/// Reads the reply to a `set`: the errno it carries (0 for success).
pub fn parse_errno_reply(reply: &str) -> Result<i32, UapiError> {
    let (lines, errno) = reply_lines(reply)?;
    if let Some((key, _)) = lines.first() {
        return Err(UapiError::MalformedLine { line: format!("unexpected {key}= in a set reply") });
    }
    Ok(errno)
}

/// Reads the reply to a `get`, as `wg` does (unknown keys are skipped). A reply whose errno
/// is not 0 is returned as `Err(UapiError::Other)` naming the errno.
pub fn parse_get_response(reply: &str) -> Result<DeviceSnapshot, UapiError> {
    let (lines, errno) = reply_lines(reply)?;
    if errno != 0 {
        return Err(UapiError::Other(format!("the device replied errno={errno}")));
    }
    let mut snapshot = DeviceSnapshot::default();
    let mut handshake_secs = 0u64;
    let mut handshake_nanos = 0u64;
    let finish_peer = |peer: &mut PeerSnapshot, secs: &mut u64, nanos: &mut u64| {
        if *secs != 0 || *nanos != 0 {
            let since = Duration::from_secs(*secs) + Duration::from_nanos(*nanos);
            peer.last_handshake = UNIX_EPOCH.checked_add(since);
        }
        (*secs, *nanos) = (0, 0);
    };
    let mut peer: Option<PeerSnapshot> = None;
    for (key, value) in lines {
        match (key, &mut peer) {
            ("public_key", _) => {
                if let Some(mut done) = peer.take() {
                    finish_peer(&mut done, &mut handshake_secs, &mut handshake_nanos);
                    snapshot.peers.push(done);
                }
                peer = Some(PeerSnapshot::new(parse_key("public_key", value)?));
            }
            ("private_key", None) => snapshot.private_key = Some(parse_key("private_key", value)?),
            ("listen_port", None) => {
                snapshot.listen_port = parse_decimal("listen_port", value, 0xffff)? as u16;
            }
            ("fwmark", None) => {
                snapshot.fwmark = parse_decimal("fwmark", value, 0xffff_ffff)? as u32;
            }
            ("preshared_key", Some(peer)) => {
                let key = parse_key("preshared_key", value)?;
                peer.preshared_key = (!key.is_zero()).then_some(key);
            }
            ("endpoint", Some(peer)) => peer.endpoint = Some(parse_endpoint(value)?),
            ("last_handshake_time_sec", Some(_)) => {
                handshake_secs = parse_decimal("last_handshake_time_sec", value, i64::MAX as u64)?;
            }
            ("last_handshake_time_nsec", Some(_)) => {
                handshake_nanos = parse_decimal("last_handshake_time_nsec", value, 999_999_999)?;
            }
            ("rx_bytes", Some(peer)) => peer.rx_bytes = parse_decimal("rx_bytes", value, u64::MAX)?,
            ("tx_bytes", Some(peer)) => peer.tx_bytes = parse_decimal("tx_bytes", value, u64::MAX)?,
            ("persistent_keepalive_interval", Some(peer)) => {
                const KEY: &str = "persistent_keepalive_interval";
                peer.persistent_keepalive_interval = parse_decimal(KEY, value, 0xffff)? as u16;
            }
            ("allowed_ip", Some(peer)) => peer.allowed_ips.push(parse_prefix(value)?),
            _ => {}
        }
    }
    if let Some(mut done) = peer {
        finish_peer(&mut done, &mut handshake_secs, &mut handshake_nanos);
        snapshot.peers.push(done);
    }
    Ok(snapshot)
}

/// The `(sec, nsec)` since the epoch a reply carries for a handshake time. A time before the
/// epoch cannot be shown; like "never", it reads as 0 and 0.
fn handshake_fields(time: Option<SystemTime>) -> (u64, u32) {
    let since = time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or(Duration::ZERO);
    (since.as_secs(), since.subsec_nanos())
}
