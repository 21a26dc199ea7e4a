//! Every key of both operations, every error and its errno, and round trips through the
//! formatters and parsers.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;

use super::*;
use crate::uapi::error::{Section, UapiError};

fn key(byte: u8) -> Key {
    Key([byte; 32])
}

fn hex(byte: u8) -> String {
    key(byte).to_hex()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn set(body: &str) -> Result<DeviceUpdate, UapiError> {
    let text = format!("set=1\n{body}\n");
    match parse_request(&text)? {
        (Request::Set(update), "") => Ok(update),
        other => panic!("unexpected parse {other:?}"),
    }
}

fn set_errno(body: &str) -> i32 {
    set(body).expect_err("accepted").errno()
}

#[test]
fn get_request() {
    assert_eq!(parse_request("get=1\n\n"), Ok((Request::Get, "")));
    assert_eq!(parse_request("get=1\n\nget=1\n\n"), Ok((Request::Get, "get=1\n\n")));
    assert_eq!(parse_request("get=1\nx\n"), Err(UapiError::TrailingGetData));
    assert_eq!(UapiError::TrailingGetData.errno(), -22);
    assert_eq!(parse_request("get=1\n"), Err(UapiError::Incomplete));
    assert_eq!(parse_request("get=1"), Err(UapiError::Incomplete));
}

#[test]
fn operations_are_exact() {
    assert_eq!(Operation::from_line(b"get=1"), Some(Operation::Get));
    assert_eq!(Operation::from_line(b"set=1"), Some(Operation::Set));
    for bad in [&b"get=2"[..], b"get=1\r", b"GET=1", b" set=1", b"set", b"", b"\xff"] {
        assert_eq!(Operation::from_line(bad), None, "{bad:?}");
    }
    let error = parse_request("hello\n\n").unwrap_err();
    assert_eq!(error, UapiError::UnknownOperation { line: "hello".into() });
    assert_eq!(error.errno(), -71);
}

#[test]
fn empty_set_changes_nothing() {
    assert_eq!(set(""), Ok(DeviceUpdate::default()));
}

#[test]
fn device_keys() {
    let private = Key(std::array::from_fn(|i| i as u8 + 0x80));
    let update = set(&format!(
        "private_key={}\nlisten_port=51820\nfwmark=4294967295\nreplace_peers=true\n",
        private.to_hex()
    ))
    .unwrap();
    assert_eq!(update.private_key, Some(private.clamped()));
    assert_ne!(private.clamped(), private, "the test key must need clamping");
    assert_eq!(update.listen_port, Some(51820));
    assert_eq!(update.fwmark, Some(u32::MAX));
    assert!(update.replace_peers);
    assert!(update.peers.is_empty());

    // The zero key clears the private key and is not clamped into a non-zero one.
    let cleared = set(&format!("private_key={}\n", hex(0))).unwrap();
    assert_eq!(cleared.private_key, Some(Key::ZERO));
    // Port and mark 0 are values too (random port, no mark); later lines win.
    let zeros = set("listen_port=1\nlisten_port=0\nfwmark=0\n").unwrap();
    assert_eq!((zeros.listen_port, zeros.fwmark), (Some(0), Some(0)));
}

#[test]
fn device_key_errors() {
    for body in [
        "private_key=00".to_owned(),
        format!("private_key={}0", hex(1)),
        format!("private_key={}", hex(1).replace('1', "x")),
        "listen_port=65536".to_owned(),
        "listen_port=-1".to_owned(),
        "listen_port=".to_owned(),
        "listen_port=0x10".to_owned(),
        "fwmark=4294967296".to_owned(),
        "fwmark=1.5".to_owned(),
        "replace_peers=false".to_owned(),
        "replace_peers=TRUE".to_owned(),
        "replace_peers=".to_owned(),
    ] {
        assert_eq!(set_errno(&body), -22, "{body}");
        assert!(matches!(set(&body), Err(UapiError::InvalidValue { .. })), "{body}");
    }
    for unknown in
        ["protocol_version=1", "rx_bytes=0", "allowed_ip=10.0.0.0/8", "endpoint=1.2.3.4:5"]
    {
        let error = set(unknown).unwrap_err();
        assert!(matches!(error, UapiError::UnknownKey { section: Section::Device, .. }));
        assert_eq!(error.errno(), -22);
    }
}

#[test]
fn peer_keys() {
    let body = format!(
        "public_key={}\npreshared_key={}\nendpoint=[2001:db8::1]:51820\n\
         persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
         allowed_ip=10.0.0.1/24\nallowed_ip=-192.168.0.0/16\nallowed_ip=::/0\n\
         protocol_version=1\n",
        hex(1),
        hex(2)
    );
    let update = set(&body).unwrap();
    assert_eq!(update.peers.len(), 1);
    let peer = &update.peers[0];
    assert_eq!(peer.public_key, key(1));
    assert_eq!(peer.preshared_key, Some(key(2)));
    assert_eq!(peer.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
    assert_eq!(peer.persistent_keepalive_interval, Some(25));
    assert_eq!(
        peer.allowed_ips,
        vec![
            AllowedIpChange::RemoveAll,
            AllowedIpChange::Add(net("10.0.0.1/24")),
            AllowedIpChange::Remove(net("192.168.0.0/16")),
            AllowedIpChange::Add(net("::/0")),
        ]
    );
    assert!(peer.replaces_allowed_ips());
    assert!(!peer.remove && !peer.update_only);

    let flags = set(&format!("public_key={}\nupdate_only=true\nremove=true\n", hex(3))).unwrap();
    assert!(flags.peers[0].remove && flags.peers[0].update_only);
    let zero_psk = set(&format!("public_key={}\npreshared_key={}\n", hex(3), hex(0))).unwrap();
    assert_eq!(zero_psk.peers[0].preshared_key, Some(Key::ZERO));
    let off = set(&format!("public_key={}\npersistent_keepalive_interval=0\n", hex(3))).unwrap();
    assert_eq!(off.peers[0].persistent_keepalive_interval, Some(0));
}

#[test]
fn allowed_ip_order_is_kept_around_replace() {
    let update = set(&format!(
        "public_key={}\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\nallowed_ip=10.1.0.0/16\n",
        hex(1)
    ))
    .unwrap();
    assert_eq!(
        update.peers[0].allowed_ips,
        vec![
            AllowedIpChange::Add(net("10.0.0.0/8")),
            AllowedIpChange::RemoveAll,
            AllowedIpChange::Add(net("10.1.0.0/16")),
        ]
    );
}

#[test]
fn peers_keep_request_order_and_repeats() {
    let update = set(&format!(
        "listen_port=1\npublic_key={a}\nallowed_ip=10.0.0.1/32\npublic_key={b}\nremove=true\n\
         public_key={a}\nendpoint=192.0.2.1:1\n",
        a = hex(0xaa),
        b = hex(0xbb)
    ))
    .unwrap();
    let keys: Vec<Key> = update.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, vec![key(0xaa), key(0xbb), key(0xaa)]);
    assert_eq!(update.peers[0].allowed_ips, vec![AllowedIpChange::Add(net("10.0.0.1/32"))]);
    assert!(update.peers[1].remove);
    assert_eq!(update.peers[2].endpoint, Some("192.0.2.1:1".parse().unwrap()));
    assert_eq!(update.peers[2].allowed_ips, vec![]);
}

#[test]
fn peer_key_errors() {
    let peer = format!("public_key={}\n", hex(1));
    for line in [
        "update_only=false",
        "remove=1",
        "remove=",
        "preshared_key=abc",
        "endpoint=1.2.3.4",
        "endpoint=[::1]",
        "endpoint=::1:51820",
        "endpoint=host.example:51820",
        "endpoint=1.2.3.4:70000",
        "persistent_keepalive_interval=65536",
        "persistent_keepalive_interval=-5",
        "replace_allowed_ips=false",
        "allowed_ip=10.0.0.0",
        "allowed_ip=10.0.0.0/33",
        "allowed_ip=+10.0.0.0/8",
        "allowed_ip=--10.0.0.0/8",
        "allowed_ip=-",
        "allowed_ip=",
        "allowed_ip=fe80::1%eth0/64",
        "protocol_version=2",
        "protocol_version=01",
        "protocol_version=",
    ] {
        let error = set(&format!("{peer}{line}")).expect_err(line);
        assert!(matches!(error, UapiError::InvalidValue { .. }), "{line}: {error:?}");
        assert_eq!(error.errno(), -22, "{line}");
    }
    for line in [
        "listen_port=1",
        "private_key=00",
        "fwmark=1",
        "replace_peers=true",
        "last_handshake_time_sec=0",
        "last_handshake_time_nsec=0",
        "rx_bytes=0",
        "tx_bytes=0",
        "errno=0",
        "Public_key=1",
    ] {
        let error = set(&format!("{peer}{line}")).expect_err(line);
        assert!(matches!(error, UapiError::UnknownKey { section: Section::Peer, .. }), "{line}");
        assert_eq!(error.errno(), -22, "{line}");
    }
    for bad_public in ["public_key=", "public_key=zz", "public_key=00"] {
        assert_eq!(set_errno(bad_public), -22, "{bad_public}");
    }
}

#[test]
fn malformed_lines_are_protocol_errors() {
    for body in ["listen_port", "garbage", " ", "\u{1}"] {
        let error = set(body).unwrap_err();
        assert!(matches!(error, UapiError::MalformedLine { .. }), "{body:?}");
        assert_eq!(error.errno(), -71, "{body:?}");
    }
    // A '=' anywhere makes a key=value line: an empty key is an unknown key.
    assert_eq!(set_errno("=5"), -22);
    // A line with a bad key still fails before the (missing) blank line matters.
    assert_eq!(
        parse_request("set=1\nbogus=1\n").unwrap_err(),
        UapiError::UnknownKey { section: Section::Device, key: "bogus".into() }
    );
    assert_eq!(parse_request("set=1\nlisten_port=1\n"), Err(UapiError::Incomplete));
}

#[test]
fn set_parser_is_incremental_and_tolerates_crlf() {
    let mut parser = SetParser::new();
    assert!(matches!(parser.feed_line(b"listen_port=7\r"), Ok(SetProgress::NeedMore)));
    assert!(matches!(
        parser.feed_line(format!("public_key={}", hex(1)).as_bytes()),
        Ok(SetProgress::NeedMore)
    ));
    let Ok(SetProgress::Complete(update)) = parser.feed_line(b"\r") else {
        panic!("a CR-only line did not end the request");
    };
    assert_eq!(update.listen_port, Some(7));
    assert_eq!(update.peers.len(), 1);
    // Non-UTF-8 bytes: in a key, an unknown key; in a value, an invalid value.
    let mut parser = SetParser::new();
    assert_eq!(parser.feed_line(b"list\xffen=1").unwrap_err().errno(), -22);
    let mut parser = SetParser::new();
    let error = parser.feed_line(b"listen_port=\xff").unwrap_err();
    assert!(matches!(error, UapiError::InvalidValue { key: "listen_port", .. }));
}

#[test]
fn get_response_format_matches_wireguard_go() {
    let private = key(0x11);
    let mut first = PeerSnapshot::new(key(0x22));
    first.preshared_key = Some(key(0x33));
    first.endpoint = Some("[fe80::1%3]:51820".parse().unwrap());
    first.last_handshake = Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
    first.rx_bytes = 1234;
    first.tx_bytes = 5678;
    first.persistent_keepalive_interval = 25;
    first.allowed_ips = vec![net("10.0.0.0/24"), net("fd00::/64")];
    let second = PeerSnapshot::new(key(0x44));
    let snapshot = DeviceSnapshot {
        private_key: Some(private),
        listen_port: 51820,
        fwmark: 0x1234,
        peers: vec![first, second],
    };
    let expected = format!(
        "private_key={}\nlisten_port=51820\nfwmark=4660\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[fe80::1%3]:51820\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
         tx_bytes=5678\nrx_bytes=1234\npersistent_keepalive_interval=25\n\
         allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\n\
         last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
         tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
         errno=0\n\n",
        hex(0x11),
        hex(0x22),
        hex(0x33),
        hex(0x44),
        hex(0)
    );
    assert_eq!(format_get_response(&snapshot), expected);
}

#[test]
fn empty_device_reports_only_errno() {
    assert_eq!(format_get_response(&DeviceSnapshot::default()), "errno=0\n\n");
    let zero_key = DeviceSnapshot { private_key: Some(Key::ZERO), ..Default::default() };
    assert_eq!(format_get_response(&zero_key), "errno=0\n\n");
    // A handshake time before the epoch cannot be shown and reads as never.
    let mut peer = PeerSnapshot::new(key(1));
    peer.last_handshake = UNIX_EPOCH.checked_sub(Duration::from_secs(5));
    let text = format_get_response(&DeviceSnapshot { peers: vec![peer], ..Default::default() });
    assert!(text.contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
}

#[test]
fn errno_replies() {
    assert_eq!(format_errno(0), "errno=0\n\n");
    assert_eq!(format_errno(-22), "errno=-22\n\n");
    assert_eq!(parse_errno_reply("errno=-98\n\n"), Ok(-98));
    assert_eq!(parse_errno_reply("errno=0\n\n"), Ok(0));
    assert!(parse_errno_reply("errno=0\n").is_err());
    assert!(parse_errno_reply("listen_port=1\nerrno=0\n\n").is_err());
    assert!(parse_errno_reply("errno=x\n\n").is_err());
}

fn sample_snapshot() -> DeviceSnapshot {
    let mut peers = Vec::new();
    for i in 1..=3u8 {
        let mut peer = PeerSnapshot::new(key(i));
        peer.preshared_key = (i % 2 == 1).then_some(key(i + 100));
        peer.endpoint = match i {
            1 => Some("192.0.2.1:51820".parse().unwrap()),
            2 => Some("[2001:db8::2]:4500".parse().unwrap()),
            _ => None,
        };
        peer.last_handshake =
            (i != 3).then(|| UNIX_EPOCH + Duration::new(1_600_000_000 + u64::from(i), 999));
        peer.rx_bytes = u64::MAX - u64::from(i);
        peer.tx_bytes = u64::from(i) * 1000;
        peer.persistent_keepalive_interval = u16::from(i) * 10;
        peer.allowed_ips =
            vec![net(&format!("10.{i}.0.0/16")), net(&format!("fd00:{i}::/32")), net("::1/128")];
        peers.push(peer);
    }
    DeviceSnapshot { private_key: Some(key(0x77).clamped()), listen_port: 1, fwmark: 2, peers }
}

#[test]
fn get_response_round_trip() {
    let snapshot = sample_snapshot();
    let text = format_get_response(&snapshot);
    assert_eq!(parse_get_response(&text), Ok(snapshot));
    let empty = DeviceSnapshot::default();
    assert_eq!(parse_get_response(&format_get_response(&empty)), Ok(empty));
    assert!(matches!(parse_get_response("errno=-22\n\n"), Err(UapiError::Other(_))));
}

#[test]
fn set_request_round_trip() {
    let mut first = PeerUpdate::new(key(1));
    first.preshared_key = Some(key(2));
    first.endpoint = Some("[::ffff:192.0.2.9]:9".parse::<SocketAddr>().unwrap());
    first.persistent_keepalive_interval = Some(0);
    first.allowed_ips = vec![
        AllowedIpChange::Add(net("10.0.0.0/8")),
        AllowedIpChange::RemoveAll,
        AllowedIpChange::Remove(net("fd00::/8")),
        AllowedIpChange::Add(net("0.0.0.0/0")),
    ];
    let mut second = PeerUpdate::new(key(3));
    second.remove = true;
    let mut third = PeerUpdate::new(key(1));
    third.update_only = true;
    let update = DeviceUpdate {
        private_key: Some(key(9).clamped()),
        listen_port: Some(65535),
        fwmark: Some(0),
        replace_peers: true,
        peers: vec![first, second, third],
    };
    let text = format_set_request(&update);
    assert!(text.starts_with("set=1\n") && text.ends_with("\n\n"));
    assert_eq!(parse_request(&text), Ok((Request::Set(update.clone()), "")));
    let empty = DeviceUpdate::default();
    assert_eq!(format_set_request(&empty), "set=1\n\n");
}

#[test]
fn the_snapshot_converted_to_a_set_reproduces_the_configuration() {
    // What `wg showconf | wg setconf` does, through our formatter and parser.
    let snapshot = sample_snapshot();
    let parsed = parse_get_response(&format_get_response(&snapshot)).unwrap();
    let update = DeviceUpdate {
        private_key: parsed.private_key,
        listen_port: Some(parsed.listen_port),
        fwmark: Some(parsed.fwmark),
        replace_peers: true,
        peers: parsed
            .peers
            .iter()
            .map(|peer| {
                let mut update = PeerUpdate::new(peer.public_key);
                update.preshared_key = peer.preshared_key;
                update.endpoint = peer.endpoint;
                update.persistent_keepalive_interval = Some(peer.persistent_keepalive_interval);
                update.allowed_ips = std::iter::once(AllowedIpChange::RemoveAll)
                    .chain(peer.allowed_ips.iter().copied().map(AllowedIpChange::Add))
                    .collect();
                update
            })
            .collect(),
    };
    let text = format_set_request(&update);
    let (request, rest) = parse_request(&text).unwrap();
    assert_eq!(rest, "");
    let Request::Set(reparsed) = request else { panic!("not a set") };
    assert_eq!(reparsed, update);
    assert_eq!(reparsed.private_key, snapshot.private_key);
}
