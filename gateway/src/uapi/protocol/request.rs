//! Parsing requests: the operation line, then (for `set`) a line at a time into a
//! [`DeviceUpdate`], so a server can parse as bytes arrive without buffering the text.

use super::super::error::{Section, UapiError};
use super::super::values::{parse_decimal, parse_endpoint, parse_key, parse_prefix, parse_true};
use super::{AllowedIpChange, DeviceUpdate, PROTOCOL_VERSION, PeerUpdate, Request};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Set,
}

impl Operation {
    /// Reads the first line of a request, without its `\n`. Exactly `get=1` or `set=1`, as
    /// wireguard-go requires (no `\r`, no spaces).
    pub fn from_line(line: &[u8]) -> Option<Operation> {
        match line {
            b"get=1" => Some(Operation::Get),
            b"set=1" => Some(Operation::Set),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum SetProgress {
    NeedMore,
    /// The blank line arrived: the whole request, validated.
    Complete(DeviceUpdate),
}

/// Parses the body of a `set` request one line at a time.
#[derive(Debug, Default)]
pub struct SetParser {
    update: DeviceUpdate,
    /// The peer whose lines are being read; device keys are only valid before the first one.
    peer: Option<PeerUpdate>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn text<'a>(key: &'static str, value: &'a [u8]) -> Result<&'a str, UapiError> {
    std::str::from_utf8(value).map_err(|_| UapiError::InvalidValue {
        key,
        value: lossy(value),
        reason: "not UTF-8".to_owned(),
    })
}

impl SetParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one line without its `\n` (a trailing `\r` is ignored, as Go's line scanner
    /// does). The first error ends the request: feed nothing more to this parser.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<SetProgress, UapiError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let mut update = std::mem::take(&mut self.update);
            update.peers.extend(self.peer.take());
            return Ok(SetProgress::Complete(update));
        }
        let Some(separator) = line.iter().position(|&b| b == b'=') else {
            return Err(UapiError::MalformedLine { line: lossy(line) });
        };
        let (key, value) = (&line[..separator], &line[separator + 1..]);
        if key == b"public_key" {
            let public_key = parse_key("public_key", text("public_key", value)?)?;
            self.update.peers.extend(self.peer.replace(PeerUpdate::new(public_key)));
            return Ok(SetProgress::NeedMore);
        }
        match &mut self.peer {
            None => device_line(&mut self.update, key, value)?,
            Some(peer) => peer_line(peer, key, value)?,
        }
        Ok(SetProgress::NeedMore)
    }
}

fn unknown_key(section: Section, key: &[u8]) -> UapiError {
    UapiError::UnknownKey { section, key: lossy(key) }
}

fn device_line(update: &mut DeviceUpdate, key: &[u8], value: &[u8]) -> Result<(), UapiError> {
    match key {
        b"private_key" => {
            let key = parse_key("private_key", text("private_key", value)?)?;
            update.private_key = Some(if key.is_zero() { key } else { key.clamped() });
        }
        b"listen_port" => {
            let port = parse_decimal("listen_port", text("listen_port", value)?, 0xffff)?;
            update.listen_port = Some(port as u16);
        }
        b"fwmark" => {
            let mark = parse_decimal("fwmark", text("fwmark", value)?, 0xffff_ffff)?;
            update.fwmark = Some(mark as u32);
        }
        b"replace_peers" => {
            parse_true("replace_peers", text("replace_peers", value)?)?;
            update.replace_peers = true;
        }
        _ => return Err(unknown_key(Section::Device, key)),
    }
    Ok(())
}

fn peer_line(peer: &mut PeerUpdate, key: &[u8], value: &[u8]) -> Result<(), UapiError> {
    match key {
        b"update_only" => {
            parse_true("update_only", text("update_only", value)?)?;
            peer.update_only = true;
        }
        b"remove" => {
            parse_true("remove", text("remove", value)?)?;
            peer.remove = true;
        }
        b"preshared_key" => {
            peer.preshared_key = Some(parse_key("preshared_key", text("preshared_key", value)?)?);
        }
        b"endpoint" => peer.endpoint = Some(parse_endpoint(text("endpoint", value)?)?),
        b"persistent_keepalive_interval" => {
            const KEY: &str = "persistent_keepalive_interval";
            let seconds = parse_decimal(KEY, text(KEY, value)?, 0xffff)?;
            peer.persistent_keepalive_interval = Some(seconds as u16);
        }
        b"replace_allowed_ips" => {
            parse_true("replace_allowed_ips", text("replace_allowed_ips", value)?)?;
            peer.allowed_ips.push(AllowedIpChange::RemoveAll);
        }
        b"allowed_ip" => {
            let value = text("allowed_ip", value)?;
            let change = match value.strip_prefix('-') {
                Some(removed) => AllowedIpChange::Remove(parse_prefix(removed)?),
                None => AllowedIpChange::Add(parse_prefix(value)?),
            };
            peer.allowed_ips.push(change);
        }
        b"protocol_version" => {
            let value = text("protocol_version", value)?;
            if value != PROTOCOL_VERSION.to_string() {
                return Err(UapiError::invalid(
                    "protocol_version",
                    value,
                    format!("only version {PROTOCOL_VERSION} exists"),
                ));
            }
        }
        _ => return Err(unknown_key(Section::Peer, key)),
    }
    Ok(())
}

/// Parses one whole request from the start of `input`; returns it and the text after it.
pub fn parse_request(input: &str) -> Result<(Request, &str), UapiError> {
    let mut rest = input;
    let mut next_line = || -> Result<&str, UapiError> {
        let (line, after) = rest.split_once('\n').ok_or(UapiError::Incomplete)?;
        rest = after;
        Ok(line)
    };
    let first = next_line()?;
    match Operation::from_line(first.as_bytes()) {
        None => Err(UapiError::UnknownOperation { line: first.to_owned() }),
        Some(Operation::Get) => {
            if next_line()?.is_empty() {
                Ok((Request::Get, rest))
            } else {
                Err(UapiError::TrailingGetData)
            }
        }
        Some(Operation::Set) => {
            let mut parser = SetParser::new();
            loop {
                if let SetProgress::Complete(update) = parser.feed_line(next_line()?.as_bytes())? {
                    return Ok((Request::Set(update), rest));
                }
            }
        }
    }
}
