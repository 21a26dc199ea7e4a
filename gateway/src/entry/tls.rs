//! Reading the server name out of the first bytes of a TLS connection, to pick its backend
//! before passing it through.
//!
//! A client's first flight is one ClientHello handshake message (RFC 8446 §4.1.2) carried in
//! handshake records (§5.1). It may arrive in any number of TCP segments, and one message may
//! be fragmented over several records: a post-quantum key share alone is 1.2 KB, and clients
//! and middleboxes split records as they like. So [`read_client_hello`] takes everything
//! received so far and says whether it is enough, reassembling the message from its records
//! each time (a hello is read once per connection, at most [`MAX_CLIENT_HELLO`] bytes: copying
//! it again per segment costs less than keeping state between segments would).
//!
//! The bytes are the peer's: every length is checked against what is there, nothing is
//! indexed unchecked, and what the caller must buffer is bounded: a hello not complete within
//! [`MAX_CLIENT_HELLO`] bytes is malformed, and [`ClientHelloScan::NeedMore`] never asks past
//! that bound.

use super::name::HostName;

/// The most bytes of records read for one ClientHello (a message this large, or larger, is
/// refused). Real hellos, post-quantum ones included, are below 2 KB; 16 KiB leaves room
/// for many extensions and pre-shared-key identities.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

const RECORD_HEADER: usize = 5;
const HANDSHAKE_HEADER: usize = 4;
/// The largest plaintext record fragment (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
/// RFC 6066 §3.
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the bytes received so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientHelloScan {
    /// The hello is not complete: at least this many more bytes are needed (never more than
    /// the hello still lacks, so reading exactly this many cannot wait for bytes the client
    /// does not send before an answer).
    NeedMore(usize),
    /// A complete, well-formed ClientHello, and the host name its server_name extension
    /// carries, lowercase. None: it carries none, or one that is not a host name (an IP
    /// literal, which RFC 6066 forbids but some clients send); route it as nameless.
    Found(Option<HostName>),
    /// The connection does not start with a TLS handshake record.
    NotTls,
    /// It starts like TLS but is not a well-formed ClientHello, or is larger than
    /// [`MAX_CLIENT_HELLO`]; why, for logs.
    Malformed(&'static str),
}

/// Reads the ClientHello at the start of `received` (all bytes of the connection so far).
pub fn read_client_hello(received: &[u8]) -> ClientHelloScan {
    if let Some(scan) = first_bytes(received) {
        return scan;
    }
    // Bytes past the bound are never looked at: the hello must end before it.
    let received = received.get(..MAX_CLIENT_HELLO).unwrap_or(received);
    match reassemble(received) {
        Ok(message) => match parse_client_hello(&message) {
            Ok(name) => ClientHelloScan::Found(name),
            Err(why) => ClientHelloScan::Malformed(why),
        },
        Err(scan) => scan,
    }
}

/// The answer the first record header's first bytes already give, if they give one: a
/// connection whose first byte is not a handshake record's, or whose version is not 3.x, is
/// not TLS (an SSL 2 hello included), however few bytes have come.
fn first_bytes(received: &[u8]) -> Option<ClientHelloScan> {
    match received {
        [] => Some(ClientHelloScan::NeedMore(RECORD_HEADER + HANDSHAKE_HEADER)),
        [kind, ..] if *kind != CONTENT_HANDSHAKE => Some(ClientHelloScan::NotTls),
        [_, major, ..] if *major != 3 => Some(ClientHelloScan::NotTls),
        _ => None,
    }
}

/// The whole ClientHello handshake message (header included) from the records it spans, or
/// what to answer if it is not all there or cannot be.
fn reassemble(received: &[u8]) -> Result<Vec<u8>, ClientHelloScan> {
    let mut message: Vec<u8> = Vec::new();
    let mut offset = 0;
    loop {
        // Known once the handshake header is in: the message's whole length.
        let wanted = message_length(&message)?;
        if let Some(wanted) = wanted
            && message.len() >= wanted
        {
            // What follows the hello in its last record (nothing, from a real client before
            // the server's answer) is not the hello's to judge.
            message.truncate(wanted);
            return Ok(message);
        }
        let missing = wanted.unwrap_or(HANDSHAKE_HEADER) - message.len();
        let Some(header) = received.get(offset..offset + RECORD_HEADER) else {
            let partial_header = received.len() - offset;
            return Err(need_more(received.len(), RECORD_HEADER - partial_header + missing));
        };
        if header[0] != CONTENT_HANDSHAKE || header[1] != 3 {
            return Err(ClientHelloScan::Malformed("the ClientHello's records are interrupted"));
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if length == 0 {
            return Err(ClientHelloScan::Malformed("an empty handshake record"));
        }
        if length > MAX_FRAGMENT {
            return Err(ClientHelloScan::Malformed("a record longer than 16 KiB"));
        }
        let body = offset + RECORD_HEADER;
        let end = body + length;
        let fragment = received.get(body..end.min(received.len())).unwrap_or_default();
        message.extend_from_slice(fragment);
        if end > received.len() {
            // The record is cut short: complete if the message ends inside what came.
            if message_length(&message)?.is_some_and(|wanted| message.len() >= wanted) {
                continue;
            }
            let record_missing = end - received.len();
            let missing = message_length(&message)?.unwrap_or(HANDSHAKE_HEADER) - message.len();
            // What the message lacks beyond this record needs at least one more header.
            let more = if missing <= record_missing { missing } else { missing + RECORD_HEADER };
            return Err(need_more(received.len(), more));
        }
        offset = end;
    }
}

/// The length of the handshake message `message` starts with, header included, once its
/// header is in; an error if it cannot be a ClientHello this reader takes.
fn message_length(message: &[u8]) -> Result<Option<usize>, ClientHelloScan> {
    if message.first().is_some_and(|&kind| kind != HANDSHAKE_CLIENT_HELLO) {
        return Err(ClientHelloScan::Malformed("the first handshake message is not a ClientHello"));
    }
    let Some(&[_, high, middle, low]) = message.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    let length =
        HANDSHAKE_HEADER + (usize::from(high) << 16 | usize::from(middle) << 8) + usize::from(low);
    // Even in a single record, the message and that record's header must fit the bound.
    if RECORD_HEADER + length > MAX_CLIENT_HELLO {
        return Err(ClientHelloScan::Malformed("a ClientHello larger than 16 KiB"));
    }
    Ok(Some(length))
}

fn need_more(received: usize, more: usize) -> ClientHelloScan {
    if received + more > MAX_CLIENT_HELLO {
        ClientHelloScan::Malformed("a ClientHello larger than 16 KiB")
    } else {
        ClientHelloScan::NeedMore(more)
    }
}

/// Reads big-endian fields and length-prefixed vectors off a slice, never past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let taken = self.rest.get(..count)?;
        self.rest = &self.rest[count..];
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// An `opaque <0..2^8-1>`: a one-byte length, then that many bytes.
    fn vector8(&mut self) -> Option<&'a [u8]> {
        let length = self.u8()?;
        self.take(usize::from(length))
    }

    /// An `opaque <0..2^16-1>`: a two-byte length, then that many bytes.
    fn vector16(&mut self) -> Option<&'a [u8]> {
        let length = self.u16()?;
        self.take(usize::from(length))
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The server name of a complete ClientHello message (header included), checking its whole
/// structure on the way (RFC 8446 §4.1.2; the same layout as TLS 1.2's, RFC 5246 §7.4.1.2).
fn parse_client_hello(message: &[u8]) -> Result<Option<HostName>, &'static str> {
    let mut hello = Reader { rest: message.get(HANDSHAKE_HEADER..).unwrap_or_default() };
    let truncated = "a ClientHello field runs past its end";
    let version = hello.u16().ok_or(truncated)?;
    if version >> 8 != 3 {
        return Err("a ClientHello of a version other than 3.x");
    }
    hello.take(32).ok_or(truncated)?; // random
    let session_id = hello.vector8().ok_or(truncated)?;
    if session_id.len() > 32 {
        return Err("a session id longer than 32 bytes");
    }
    let cipher_suites = hello.vector16().ok_or(truncated)?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err("a malformed cipher suite list");
    }
    if hello.vector8().ok_or(truncated)?.is_empty() {
        return Err("no compression method");
    }
    if hello.is_empty() {
        // Before TLS 1.3, a hello may end here, without extensions and so without a name.
        return Ok(None);
    }
    let extensions = hello.vector16().ok_or(truncated)?;
    if !hello.is_empty() {
        return Err("bytes after a ClientHello's extensions");
    }
    parse_extensions(extensions)
}

fn parse_extensions(extensions: &[u8]) -> Result<Option<HostName>, &'static str> {
    let mut extensions = Reader { rest: extensions };
    let mut kinds = Vec::new();
    let mut name = None;
    while !extensions.is_empty() {
        let truncated = "an extension runs past the extension list";
        let kind = extensions.u16().ok_or(truncated)?;
        let data = extensions.vector16().ok_or(truncated)?;
        kinds.push(kind);
        if kind == EXTENSION_SERVER_NAME {
            name = parse_server_name(data)?;
        }
    }
    // "There MUST NOT be more than one extension of the same type" (RFC 8446 §4.2). Sorting
    // keeps this O(n log n) in the thousands of empty extensions 16 KiB can hold.
    kinds.sort_unstable();
    if kinds.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err("an extension appears twice");
    }
    Ok(name)
}

/// The server_name extension's data (RFC 6066 §3): a list of names, at most one per type.
fn parse_server_name(data: &[u8]) -> Result<Option<HostName>, &'static str> {
    let mut data = Reader { rest: data };
    let truncated = "a server_name extension runs past its end";
    let list = data.vector16().ok_or(truncated)?;
    if !data.is_empty() {
        return Err("bytes after the server name list");
    }
    if list.is_empty() {
        return Err("an empty server name list");
    }
    let mut list = Reader { rest: list };
    let mut host_name: Option<&[u8]> = None;
    while !list.is_empty() {
        let name_type = list.u8().ok_or(truncated)?;
        // Only host_name is defined; any other type is assumed framed the same way and is
        // skipped, as a future type would have to be for old servers to skip it.
        let name = list.vector16().ok_or(truncated)?;
        if name_type != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host_name.is_some() {
            return Err("two host names in server_name");
        }
        if name.is_empty() {
            return Err("an empty host name in server_name");
        }
        host_name = Some(name);
    }
    Ok(host_name.and_then(|name| HostName::from_bytes(name).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as OpenSSL 3.0.19's `s_client -servername NAS.Example.com -alpn
    /// h2,http/1.1` sent it, captured off a socket: one record, TLS 1.3 with 1.2 fallback.
    const OPENSSL_HELLO: &[u8] = include_bytes!("testdata/openssl-3.0-client-hello.bin");

    fn vector8(bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    fn vector16(bytes: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        [kind.to_be_bytes().to_vec(), vector16(data)].concat()
    }

    fn server_name(name: &[u8]) -> Vec<u8> {
        extension(
            EXTENSION_SERVER_NAME,
            &vector16(&[vec![NAME_TYPE_HOST_NAME], vector16(name)].concat()),
        )
    }

    fn words(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|value| value.to_be_bytes()).collect()
    }

    /// Bytes that look like key material: a fixed xorshift stream.
    fn noise(length: usize, seed: u32) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    /// The extensions a current browser sends (RFC 8446 §4.2 and friends), `name_extension`
    /// among them, with an X25519MLKEM768 key share (1184-byte ML-KEM-768 encapsulation key
    /// and 32-byte X25519 share, draft-ietf-tls-ecdhe-mlkem) beside a plain X25519 one.
    fn browser_extensions(name_extension: Option<Vec<u8>>) -> Vec<Vec<u8>> {
        let key_shares = [
            words(&[0x11ec]),
            vector16(&noise(1216, 1)),
            words(&[0x001d]),
            vector16(&noise(32, 2)),
        ]
        .concat();
        let alpn = [vector8(b"h2"), vector8(b"http/1.1")].concat();
        let mut extensions = vec![
            extension(0x0a0a, &[]),  // GREASE (RFC 8701)
            extension(23, &[]),      // extended_master_secret
            extension(0xff01, &[0]), // renegotiation_info
            extension(10, &vector16(&words(&[0x11ec, 0x001d, 0x0017, 0x0018]))), // supported_groups
            extension(11, &vector8(&[0])), // ec_point_formats
            extension(35, &[]),      // session_ticket
            extension(16, &vector16(&alpn)), // ALPN
            extension(5, &[1, 0, 0, 0, 0]), // status_request
            extension(13, &vector16(&words(&[0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501]))),
            extension(18, &[]),                    // signed_certificate_timestamp
            extension(51, &vector16(&key_shares)), // key_share
            extension(45, &vector8(&[1])),         // psk_key_exchange_modes
            extension(43, &vector8(&words(&[0x0304, 0x0303]))), // supported_versions
            extension(27, &vector8(&words(&[2]))), // compress_certificate
            extension(0xfe0d, &noise(218, 3)),     // encrypted_client_hello (GREASE ECH)
        ];
        if let Some(name_extension) = name_extension {
            extensions.insert(1, name_extension);
        }
        extensions
    }

    /// A ClientHello handshake message (header included) with these extensions.
    fn hello_with(extensions: &[Vec<u8>]) -> Vec<u8> {
        let body = [
            words(&[0x0303]),
            noise(32, 4),
            vector8(&noise(32, 5)),
            vector16(&words(&[0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xcca9])),
            vector8(&[0]),
            vector16(&extensions.concat()),
        ]
        .concat();
        handshake(&body)
    }

    fn handshake(body: &[u8]) -> Vec<u8> {
        let length = u32::try_from(body.len()).unwrap().to_be_bytes();
        [vec![HANDSHAKE_CLIENT_HELLO], length[1..].to_vec(), body.to_vec()].concat()
    }

    fn post_quantum_hello(name: &str) -> Vec<u8> {
        hello_with(&browser_extensions(Some(server_name(name.as_bytes()))))
    }

    /// `message` in handshake records of at most `fragment` bytes each.
    fn records(message: &[u8], fragment: usize) -> Vec<u8> {
        message.chunks(fragment).flat_map(|chunk| record(CONTENT_HANDSHAKE, chunk)).collect()
    }

    fn record(kind: u8, fragment: &[u8]) -> Vec<u8> {
        [vec![kind, 3, 1], vector16(fragment)].concat()
    }

    fn found(name: &str) -> ClientHelloScan {
        ClientHelloScan::Found(Some(HostName::parse(name).unwrap()))
    }

    /// Every prefix of `connection` asks for more, and never for more than the rest of it.
    fn assert_every_prefix_needs_at_most_the_rest(connection: &[u8]) {
        for cut in 0..connection.len() {
            match read_client_hello(&connection[..cut]) {
                ClientHelloScan::NeedMore(more) => {
                    assert!(more >= 1 && cut + more <= connection.len(), "cut {cut}: more {more}")
                }
                other => panic!("cut {cut} of {}: {other:?}", connection.len()),
            }
        }
    }

    #[test]
    fn a_post_quantum_hello_in_one_record_gives_its_name() {
        let connection = records(&post_quantum_hello("nas.example.com"), MAX_FRAGMENT);
        assert!((1600..2000).contains(&connection.len()), "{}", connection.len());
        assert_eq!(read_client_hello(&connection), found("nas.example.com"));
    }

    #[test]
    fn a_hello_cut_at_any_byte_needs_more_and_says_no_more_than_the_rest() {
        let connection = records(&post_quantum_hello("nas.example.com"), MAX_FRAGMENT);
        assert_every_prefix_needs_at_most_the_rest(&connection);
        // And whatever arrives after the hello does not change the answer.
        let mut followed = connection.clone();
        followed.extend_from_slice(&record(20, &[1]));
        assert_eq!(read_client_hello(&followed), found("nas.example.com"));
    }

    #[test]
    fn reading_exactly_what_it_asks_for_reaches_the_hello_and_stops_there() {
        for fragment in [MAX_FRAGMENT, 1000, 7, 1] {
            let connection = records(&post_quantum_hello("nas.example.com"), fragment);
            let mut received = 0;
            let scan = loop {
                match read_client_hello(&connection[..received]) {
                    ClientHelloScan::NeedMore(more) => received += more,
                    other => break other,
                }
            };
            assert_eq!(scan, found("nas.example.com"), "fragment {fragment}");
            assert_eq!(received, connection.len(), "fragment {fragment}");
        }
    }

    #[test]
    fn a_hello_fragmented_over_many_records_is_reassembled() {
        let message = post_quantum_hello("nas.example.com");
        for fragment in [1, 2, 3, 5, 100, 512, 1024, 1500] {
            assert_eq!(read_client_hello(&records(&message, fragment)), found("nas.example.com"));
        }
        assert_every_prefix_needs_at_most_the_rest(&records(&message, 7));
    }

    #[test]
    fn a_hello_split_over_two_records_at_every_byte_is_reassembled() {
        let message = post_quantum_hello("nas.example.com");
        for split in 1..message.len() {
            let connection = [
                record(CONTENT_HANDSHAKE, &message[..split]),
                record(CONTENT_HANDSHAKE, &message[split..]),
            ]
            .concat();
            assert_eq!(read_client_hello(&connection), found("nas.example.com"), "split {split}");
        }
    }

    #[test]
    fn a_real_openssl_hello_gives_its_name_lowercased() {
        assert_eq!(read_client_hello(OPENSSL_HELLO), found("nas.example.com"));
        assert_every_prefix_needs_at_most_the_rest(OPENSSL_HELLO);
        let message = &OPENSSL_HELLO[RECORD_HEADER..];
        assert_eq!(read_client_hello(&records(message, 10)), found("nas.example.com"));
    }

    #[test]
    fn hellos_without_a_usable_name_are_found_nameless() {
        let without = hello_with(&browser_extensions(None));
        assert_eq!(read_client_hello(&records(&without, 400)), ClientHelloScan::Found(None));
        for literal in [&b"192.0.2.1"[..], b"under_score.example", b"\xffbad.example", b"a..b"] {
            let hello = hello_with(&browser_extensions(Some(server_name(literal))));
            assert_eq!(read_client_hello(&records(&hello, 400)), ClientHelloScan::Found(None));
        }
        // A TLS 1.2 hello may have no extensions at all.
        let bare = handshake(
            &[
                words(&[0x0303]),
                noise(32, 6),
                vector8(&[]),
                vector16(&words(&[0xc02f])),
                vector8(&[0]),
            ]
            .concat(),
        );
        assert_eq!(read_client_hello(&records(&bare, 400)), ClientHelloScan::Found(None));
        // Name types other than host_name are skipped.
        let list =
            [vec![7], vector16(b"opaque"), vec![NAME_TYPE_HOST_NAME], vector16(b"Web.Example")]
                .concat();
        let hello = hello_with(&[extension(EXTENSION_SERVER_NAME, &vector16(&list))]);
        assert_eq!(read_client_hello(&records(&hello, 400)), found("web.example"));
    }

    #[test]
    fn other_protocols_are_not_tls_from_their_first_bytes() {
        assert_eq!(read_client_hello(b"G"), ClientHelloScan::NotTls);
        assert_eq!(
            read_client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ClientHelloScan::NotTls
        );
        assert_eq!(read_client_hello(b"SSH-2.0-OpenSSH_9.6\r\n"), ClientHelloScan::NotTls);
        assert_eq!(read_client_hello(&[0x80, 0x2e, 0x01, 0x00, 0x02]), ClientHelloScan::NotTls);
        assert_eq!(read_client_hello(&[CONTENT_HANDSHAKE, 2]), ClientHelloScan::NotTls);
        assert_eq!(read_client_hello(&[]), ClientHelloScan::NeedMore(9));
        assert_eq!(read_client_hello(&[CONTENT_HANDSHAKE]), ClientHelloScan::NeedMore(8));
    }

    fn malformed(connection: &[u8]) -> &'static str {
        match read_client_hello(connection) {
            ClientHelloScan::Malformed(why) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_hellos_are_named_malformed() {
        let with = |extensions: &[Vec<u8>]| records(&hello_with(extensions), MAX_FRAGMENT);
        let sni = server_name(b"a.example");
        assert_eq!(malformed(&with(&[sni.clone(), sni.clone()])), "an extension appears twice");
        let two_names = [vec![0], vector16(b"a.example"), vec![0], vector16(b"b.example")].concat();
        let two = extension(EXTENSION_SERVER_NAME, &vector16(&two_names));
        assert_eq!(malformed(&with(&[two])), "two host names in server_name");
        let empty_list = extension(EXTENSION_SERVER_NAME, &vector16(&[]));
        assert_eq!(malformed(&with(&[empty_list])), "an empty server name list");
        let empty_name =
            extension(EXTENSION_SERVER_NAME, &vector16(&[vec![0], vector16(b"")].concat()));
        assert_eq!(malformed(&with(&[empty_name])), "an empty host name in server_name");
        let no_list = extension(EXTENSION_SERVER_NAME, &[]);
        assert_eq!(malformed(&with(&[no_list])), "a server_name extension runs past its end");
        let long_inner = extension(EXTENSION_SERVER_NAME, &[0, 12, 0, 0, 9, b'a']);
        assert_eq!(malformed(&with(&[long_inner])), "a server_name extension runs past its end");
        let trailing = extension(
            EXTENSION_SERVER_NAME,
            &[vector16(&[vec![0], vector16(b"a.example")].concat()), vec![0]].concat(),
        );
        assert_eq!(malformed(&with(&[trailing])), "bytes after the server name list");

        let hello = hello_with(std::slice::from_ref(&sni));
        let mut not_a_hello = hello.clone();
        not_a_hello[0] = 2;
        assert_eq!(
            malformed(&records(&not_a_hello, 400)),
            "the first handshake message is not a ClientHello"
        );
        // Field by field: offsets into the body, after the 4-byte handshake header.
        let body = &hello[HANDSHAKE_HEADER..];
        let mutate = |at: usize, value: u8| {
            let mut body = body.to_vec();
            body[at] = value;
            malformed(&records(&handshake(&body), 400))
        };
        assert_eq!(mutate(0, 2), "a ClientHello of a version other than 3.x");
        assert_eq!(mutate(34, 33), "a session id longer than 32 bytes");
        let suites = 34 + 1 + 32;
        assert_eq!(mutate(suites + 1, 13), "a malformed cipher suite list");
        assert_eq!(mutate(suites + 1, 0), "a malformed cipher suite list");
        let compression = suites + 2 + 14;
        assert_eq!(mutate(compression, 0), "no compression method");
        let extensions = compression + 2;
        assert_eq!(
            mutate(extensions + 1, body[extensions + 1] + 1),
            "a ClientHello field runs past its end"
        );
        assert_eq!(
            mutate(extensions + 1, body[extensions + 1] - 1),
            "bytes after a ClientHello's extensions"
        );
        let mut short_extension = [words(&[0x0a0a]), vec![0]].concat();
        short_extension.truncate(3);
        assert_eq!(
            malformed(&with(&[short_extension])),
            "an extension runs past the extension list"
        );
        let cut_before_compression = handshake(&body[..compression]);
        assert_eq!(
            malformed(&records(&cut_before_compression, 400)),
            "a ClientHello field runs past its end"
        );
    }

    #[test]
    fn records_that_cannot_carry_a_hello_are_malformed() {
        let message = post_quantum_hello("nas.example.com");
        let interrupted =
            [record(CONTENT_HANDSHAKE, &message[..100]), record(21, &message[100..])].concat();
        assert_eq!(malformed(&interrupted), "the ClientHello's records are interrupted");
        let empty_first =
            [record(CONTENT_HANDSHAKE, &[]), records(&message, MAX_FRAGMENT)].concat();
        assert_eq!(malformed(&empty_first), "an empty handshake record");
        let oversized = [CONTENT_HANDSHAKE, 3, 1, 0x40, 0x01];
        assert_eq!(malformed(&oversized), "a record longer than 16 KiB");
    }

    #[test]
    fn nothing_past_16_kib_is_ever_asked_for() {
        // A header announcing a message beyond the bound is refused at once.
        let header = [CONTENT_HANDSHAKE, 3, 1, 0x40, 0x00, HANDSHAKE_CLIENT_HELLO, 0, 0x40, 0];
        assert_eq!(malformed(&header), "a ClientHello larger than 16 KiB");
        // One that fits in one record but not in small ones is refused when its records
        // would pass the bound, and every prefix asks only for what stays within it.
        let big = hello_with(&[extension(21, &vec![0; 12 * 1024]), server_name(b"a.example")]);
        assert_eq!(read_client_hello(&records(&big, MAX_FRAGMENT)), found("a.example"));
        let split = records(&big, 8);
        assert!(split.len() > MAX_CLIENT_HELLO);
        assert_eq!(malformed(&split), "a ClientHello larger than 16 KiB");
        for cut in (0..split.len()).step_by(61) {
            match read_client_hello(&split[..cut]) {
                ClientHelloScan::NeedMore(more) => assert!(cut + more <= MAX_CLIENT_HELLO),
                ClientHelloScan::Malformed(why) => {
                    assert_eq!(why, "a ClientHello larger than 16 KiB")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn corrupted_hellos_never_panic_nor_ask_past_the_bound() {
        let connection = records(&post_quantum_hello("nas.example.com"), 300);
        let mut random = noise(connection.len() * 4, 7).into_iter();
        for at in 0..connection.len() {
            for _ in 0..2 {
                let mut corrupted = connection.clone();
                corrupted[at] = random.next().unwrap();
                let cut = corrupted.len() - usize::from(random.next().unwrap()) % 64;
                for received in [&corrupted[..], &corrupted[..cut]] {
                    if let ClientHelloScan::NeedMore(more) = read_client_hello(received) {
                        assert!(more >= 1 && received.len() + more <= MAX_CLIENT_HELLO);
                    }
                }
            }
        }
    }
}
