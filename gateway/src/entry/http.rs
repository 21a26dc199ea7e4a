//! Reading the host an HTTP/1.x request is for out of its first bytes, to pick its backend
//! before passing the connection through unchanged.
//!
//! [`read_host`] takes everything received so far and reads the request line and the whole
//! header block (RFC 9112 §2.1), since a second Host header may come anywhere in it and must
//! be refused, not ignored: a backend that took the other one would see a different request
//! than the one routed. The block must end within [`MAX_HEADER_BLOCK`] bytes, so a client
//! that trickles headers (or sends none) costs the caller a bounded buffer; the wait itself
//! is the caller's timeout.
//!
//! Tolerated as RFC 9112 lets a server tolerate: empty lines before the request line (§2.2),
//! bare LF line ends (§2.2), any case in field names, whitespace around field values.
//! Refused: obs-fold (§5.2), whitespace between a field name and its colon (§5.1), bare CR,
//! control characters, two Host fields, an HTTP/1.1 request without one (§3.2).

use super::name::HostName;

/// The most bytes the request line and header fields may take together.
pub const MAX_HEADER_BLOCK: usize = 8 * 1024;

/// What the bytes received so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostScan {
    /// The header block has not ended yet.
    NeedMore,
    /// A complete, well-formed header block, and the host the request is for, lowercase and
    /// without its port. None: an HTTP/1.0 request without Host, or a host that is an IP
    /// address or otherwise no host name; route it as nameless.
    Found(Option<HostName>),
    /// The connection does not start with an HTTP/1.x request line.
    NotHttp,
    /// It starts like HTTP/1.x but its header block is malformed, or longer than
    /// [`MAX_HEADER_BLOCK`]; why, for logs.
    Malformed(&'static str),
}

/// Reads the host of the HTTP/1.x request at the start of `received` (all bytes of the
/// connection so far).
pub fn read_host(received: &[u8]) -> HostScan {
    // Bytes past the bound are never looked at: the block must end before it.
    let bounded = received.get(..MAX_HEADER_BLOCK).unwrap_or(received);
    let incomplete = || {
        if bounded.len() == MAX_HEADER_BLOCK {
            HostScan::Malformed("a header block longer than 8 KiB")
        } else {
            HostScan::NeedMore
        }
    };
    let mut rest = bounded;
    while let Some((b"", after)) = next_line(rest) {
        rest = after;
    }
    let Some((line, mut rest)) = next_line(rest) else {
        return if could_start_request_line(rest) { incomplete() } else { HostScan::NotHttp };
    };
    let Some(request) = RequestLine::parse(line) else {
        return HostScan::NotHttp;
    };
    let mut host_field = None;
    loop {
        let Some((line, after)) = next_line(rest) else {
            return incomplete();
        };
        rest = after;
        if line.is_empty() {
            break;
        }
        let field = match Field::parse(line) {
            Ok(field) => field,
            Err(why) => return HostScan::Malformed(why),
        };
        if field.name.eq_ignore_ascii_case(b"host") {
            if host_field.is_some() {
                return HostScan::Malformed("two Host header fields");
            }
            host_field = Some(field.value);
        }
    }
    let host = match (request.absolute_authority(), host_field) {
        // In absolute form, the target's authority names the host, not Host (§3.2.2).
        (Some(authority), _) => authority,
        (None, Some(value)) => value,
        (None, None) if request.minor_version == 0 => return HostScan::Found(None),
        (None, None) => return HostScan::Malformed("an HTTP/1.1 request without Host"),
    };
    match host_name(host) {
        Ok(name) => HostScan::Found(name),
        Err(why) => HostScan::Malformed(why),
    }
}

/// The first line of `bytes` without its LF or CRLF, and what follows it; None while no LF
/// has come.
fn next_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&byte| byte == b'\n')?;
    let line = &bytes[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), &bytes[end + 1..]))
}

/// RFC 9110 §5.6.2: the characters of a token (methods, field names).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A request target is printable ASCII (RFC 9112 §3.2).
fn is_target_byte(byte: u8) -> bool {
    byte.is_ascii_graphic()
}

/// Whether an unfinished first line can still become an HTTP/1.x request line, so that other
/// protocols are told apart from their first bytes.
fn could_start_request_line(partial: &[u8]) -> bool {
    if partial == b"\r" {
        return true; // an empty line before the request line, cut after its CR
    }
    let mut parts = partial.splitn(3, |&byte| byte == b' ');
    let method = parts.next().unwrap_or_default();
    if !method.iter().all(|&byte| is_token_byte(byte)) {
        return false;
    }
    let Some(target) = parts.next() else {
        return true;
    };
    if method.is_empty() || !target.iter().all(|&byte| is_target_byte(byte)) {
        return false;
    }
    let Some(version) = parts.next() else {
        return true;
    };
    let version = version.strip_suffix(b"\r").unwrap_or(version);
    !target.is_empty() && version_could_be_http1(version)
}

/// Whether `version` is `HTTP/1.` and a digit, or the start of that.
fn version_could_be_http1(version: &[u8]) -> bool {
    let prefix = b"HTTP/1.";
    match version.len() {
        length if length <= prefix.len() => prefix.starts_with(version),
        length if length == prefix.len() + 1 => {
            version.starts_with(prefix) && version[prefix.len()].is_ascii_digit()
        }
        _ => false,
    }
}

/// The parts of a request line this reader needs.
struct RequestLine<'a> {
    target: &'a [u8],
    minor_version: u8,
}

impl<'a> RequestLine<'a> {
    /// `method SP request-target SP HTTP/1.x` (RFC 9112 §3); None if the line is not that.
    fn parse(line: &'a [u8]) -> Option<RequestLine<'a>> {
        let mut parts = line.splitn(3, |&byte| byte == b' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let version = parts.next()?;
        let well_formed = !method.is_empty()
            && method.iter().all(|&byte| is_token_byte(byte))
            && !target.is_empty()
            && target.iter().all(|&byte| is_target_byte(byte))
            && version.len() == b"HTTP/1.1".len()
            && version_could_be_http1(version);
        if !well_formed {
            return None;
        }
        // A digit: version_could_be_http1 checked it.
        let minor_version = version.last()? - b'0';
        Some(RequestLine { target, minor_version })
    }

    /// The authority of an absolute-form target (`http://host:port/path`).
    fn absolute_authority(&self) -> Option<&'a [u8]> {
        let target = self.target;
        let scheme_end = target.iter().position(|&byte| byte == b':')?;
        let scheme = &target[..scheme_end];
        let after_scheme = target.get(scheme_end..)?.strip_prefix(b"://")?;
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return None;
        }
        let end = after_scheme.iter().position(|byte| b"/?#".contains(byte));
        Some(&after_scheme[..end.unwrap_or(after_scheme.len())])
    }
}

/// One header field line.
struct Field<'a> {
    name: &'a [u8],
    /// Without the whitespace around it.
    value: &'a [u8],
}

impl<'a> Field<'a> {
    fn parse(line: &'a [u8]) -> Result<Field<'a>, &'static str> {
        if line.first().is_some_and(|&byte| byte == b' ' || byte == b'\t') {
            return Err("a header field folded over lines (obs-fold)");
        }
        let colon =
            line.iter().position(|&byte| byte == b':').ok_or("a header line without ':'")?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
            return Err("a malformed header field name");
        }
        let is_space = |byte: &u8| *byte == b' ' || *byte == b'\t';
        let value = &line[colon + 1..];
        let start = value.iter().position(|byte| !is_space(byte)).unwrap_or(value.len());
        let end = value.iter().rposition(|byte| !is_space(byte)).map_or(start, |last| last + 1);
        let value = &value[start..end];
        // Field values are printable, spaces, tabs, and bytes >= 0x80 (obs-text); a control
        // character (a CR not before LF among them) is refused rather than passed on.
        let allowed = |byte: &u8| *byte >= 0x20 && *byte != 0x7f || *byte == b'\t';
        if !value.iter().all(allowed) {
            return Err("a control character in a header field");
        }
        Ok(Field { name, value })
    }
}

/// The host name in `uri-host [ ":" port ]` (RFC 9110 §7.2), as Host and absolute targets
/// carry it; None for an empty host, an IP literal, or a registered name that is no host
/// name (percent-encoded, underscores, …).
fn host_name(authority: &[u8]) -> Result<Option<HostName>, &'static str> {
    let bad = "a Host that is not host[:port]";
    if authority.contains(&b'@') {
        return Err("credentials in the request target");
    }
    let (host, port) = if let Some(literal) = authority.strip_prefix(b"[") {
        let close = literal.iter().position(|&byte| byte == b']').ok_or(bad)?;
        let after = &literal[close + 1..];
        let port = if after.is_empty() { None } else { Some(after.strip_prefix(b":").ok_or(bad)?) };
        (None, port)
    } else {
        match authority.iter().rposition(|&byte| byte == b':') {
            Some(colon) => (Some(&authority[..colon]), Some(&authority[colon + 1..])),
            None => (Some(authority), None),
        }
    };
    if port.is_some_and(|port| !port.iter().all(u8::is_ascii_digit)) {
        return Err(bad);
    }
    let Some(host) = host else {
        return Ok(None);
    };
    // RFC 3986 §3.2.2 reg-name: unreserved, sub-delims, percent-encoding.
    let reg_name_byte =
        |byte: &u8| byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(byte);
    if !host.iter().all(reg_name_byte) {
        return Err(bad);
    }
    Ok(HostName::from_bytes(host).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str) -> HostScan {
        HostScan::Found(Some(HostName::parse(name).unwrap()))
    }

    fn malformed(request: &[u8]) -> &'static str {
        match read_host(request) {
            HostScan::Malformed(why) => why,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(request)),
        }
    }

    const BROWSER_REQUEST: &[u8] = b"GET /photos/?album=2025 HTTP/1.1\r\n\
        Host: NAS.Example.com:8080\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate\r\n\
        Connection: keep-alive\r\n\
        Upgrade-Insecure-Requests: 1\r\n\
        \r\n";

    #[test]
    fn a_browser_request_gives_its_host_lowercased_without_the_port() {
        assert_eq!(read_host(BROWSER_REQUEST), found("nas.example.com"));
    }

    #[test]
    fn a_request_cut_at_any_byte_needs_more_and_its_body_changes_nothing() {
        for cut in 0..BROWSER_REQUEST.len() {
            assert_eq!(read_host(&BROWSER_REQUEST[..cut]), HostScan::NeedMore, "cut {cut}");
        }
        let with_body = [BROWSER_REQUEST, b"POST garbage \0\r\n\r\n".as_slice()].concat();
        assert_eq!(read_host(&with_body), found("nas.example.com"));
    }

    #[test]
    fn case_whitespace_line_ends_and_leading_empty_lines_are_tolerated() {
        let requests: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nhOsT:example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHOST: \t Example.COM. \t\r\n\r\n",
            b"GET / HTTP/1.1\nHost: example.com\nAccept: */*\n\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Empty:\r\nHost: example.com\r\nX-Latin: caf\xe9\r\n\r\n",
        ];
        for request in requests {
            assert_eq!(
                read_host(request),
                found("example.com"),
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
    }

    #[test]
    fn requests_without_a_host_name_are_found_nameless_or_refused() {
        assert_eq!(read_host(b"GET / HTTP/1.0\r\n\r\n"), HostScan::Found(None));
        assert_eq!(read_host(b"GET / HTTP/1.0\r\nHost: 192.0.2.1\r\n\r\n"), HostScan::Found(None));
        assert_eq!(
            read_host(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"),
            HostScan::Found(None)
        );
        assert_eq!(read_host(b"GET / HTTP/1.1\r\nHost: \r\n\r\n"), HostScan::Found(None));
        assert_eq!(read_host(b"GET / HTTP/1.1\r\nHost: my_nas.lan\r\n\r\n"), HostScan::Found(None));
        assert_eq!(
            malformed(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            "an HTTP/1.1 request without Host"
        );
    }

    #[test]
    fn an_absolute_target_names_the_host_over_the_host_field() {
        let request = b"GET HTTP://Web.Example:8080/a?b HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(read_host(request), found("web.example"));
        let request = b"GET https://web.example HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(read_host(request), found("web.example"));
        let request = b"GET http://user@web.example/ HTTP/1.1\r\nHost: web.example\r\n\r\n";
        assert_eq!(malformed(request), "credentials in the request target");
    }

    #[test]
    fn other_protocols_are_not_http_as_soon_as_their_first_line_says_so() {
        let others: [&[u8]; 9] = [
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /\r\n",
            b"GET / HTTP/2",
            b"GET / FTP",
            b"GET  / HTTP/1.1",
            b" GET",
            b"GET / HTTP/1.1x\r\n",
        ];
        for other in others {
            assert_eq!(read_host(other), HostScan::NotHttp, "{:?}", String::from_utf8_lossy(other));
        }
        for start in [
            &b""[..],
            b"\r",
            b"G",
            b"GET",
            b"GET ",
            b"GET /",
            b"GET / ",
            b"GET / HTTP/1.",
            b"GET / HTTP/1.1\r",
        ] {
            assert_eq!(
                read_host(start),
                HostScan::NeedMore,
                "{:?}",
                String::from_utf8_lossy(start)
            );
        }
    }

    #[test]
    fn malformed_header_blocks_are_refused_with_the_reason() {
        let cases: [(&[u8], &str); 10] = [
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\n continued\r\n\r\n",
                "a header field folded over lines (obs-fold)",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\n\tcontinued\r\n\r\n",
                "a header field folded over lines (obs-fold)",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n",
                "two Host header fields",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
                "two Host header fields",
            ),
            (b"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", "a malformed header field name"),
            (b"GET / HTTP/1.1\r\n: a.example\r\n\r\n", "a malformed header field name"),
            (b"GET / HTTP/1.1\r\nHost a.example\r\n\r\n", "a header line without ':'"),
            (
                b"GET / HTTP/1.1\r\nHost: a.exa\0mple\r\n\r\n",
                "a control character in a header field",
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\rb\r\nHost: a.example\r\n\r\n",
                "a control character in a header field",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\r\n\r\n",
                "a control character in a header field",
            ),
        ];
        for (request, why) in cases {
            assert_eq!(malformed(request), why, "{:?}", String::from_utf8_lossy(request));
        }
        for host in ["a/b", "a.example:80x", "a.example:8080:1", "[2001:db8::1", "[::1]x", "a b"] {
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(malformed(request.as_bytes()), "a Host that is not host[:port]", "{host}");
        }
    }

    #[test]
    fn a_header_block_must_end_within_8_kib() {
        let mut request = b"GET / HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        while request.len() < MAX_HEADER_BLOCK - 100 {
            request.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
        }
        // Padded so that its final empty line ends on the last byte allowed.
        let mut fits = request.clone();
        let padding = MAX_HEADER_BLOCK - fits.len() - b"X-Pad: \r\n\r\n".len();
        fits.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "x".repeat(padding)).as_bytes());
        assert_eq!(fits.len(), MAX_HEADER_BLOCK);
        assert_eq!(read_host(&fits), found("a.example"));
        let mut slow = request.clone();
        while slow.len() < 2 * MAX_HEADER_BLOCK {
            slow.extend_from_slice(b"X-Trickle: 1\r\n");
        }
        for cut in 0..slow.len() {
            let expected = if cut < MAX_HEADER_BLOCK {
                HostScan::NeedMore
            } else {
                HostScan::Malformed("a header block longer than 8 KiB")
            };
            assert_eq!(read_host(&slow[..cut]), expected, "cut {cut}");
        }
        let endless_empty_lines = b"\r\n".repeat(MAX_HEADER_BLOCK);
        assert_eq!(malformed(&endless_empty_lines), "a header block longer than 8 KiB");
    }

    #[test]
    fn corrupted_requests_never_panic() {
        let mut state = 0x2545_f491_u32;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for at in 0..BROWSER_REQUEST.len() {
            for _ in 0..4 {
                let mut corrupted = BROWSER_REQUEST.to_vec();
                corrupted[at] = random() as u8;
                let cut = random() as usize % corrupted.len();
                read_host(&corrupted);
                read_host(&corrupted[..cut]);
            }
        }
    }
}
