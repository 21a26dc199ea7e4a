//! A TLS ClientHello record naming a server (SNI), byte-exact as a TLS 1.3 client sends it, for
//! testing what routes by SNI without a TLS stack: `peer-report` answers one once it has the
//! whole record. Padding (RFC 7685) makes it as large as a ClientHello with post-quantum key
//! shares (~1.7 KB), so it spans more than one TCP segment when written in two parts.

/// TLS record content type "handshake", and the handshake type "client_hello".
const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXTENSION_SERVER_NAME: u16 = 0x0000;
const EXTENSION_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXTENSION_PADDING: u16 = 0x0015;
const SERVER_NAME_HOST: u8 = 0;
const TLS_AES_128_GCM_SHA256: u16 = 0x1301;
const TLS_1_3: u16 = 0x0304;
/// What a ClientHello record claims as versions (RFC 8446 §4.1.2, §5.1).
const LEGACY_RECORD_VERSION: u16 = 0x0301;
const LEGACY_VERSION: u16 = 0x0303;
/// A ClientHello with an ML-KEM-768 + X25519 key share is about this large.
pub const POST_QUANTUM_SIZE: usize = 1_700;

/// The ClientHello record for `server_name`, padded to at least `at_least` bytes in all (no
/// padding if it is already that large). Random and session id are fixed: the bytes only
/// need to parse.
pub fn client_hello(server_name: &str, at_least: usize) -> Vec<u8> {
    let mut extensions = Vec::new();
    let name = server_name.as_bytes();
    let mut server_name_list = vec![SERVER_NAME_HOST];
    server_name_list.extend_from_slice(&length16(name.len()));
    server_name_list.extend_from_slice(name);
    let mut server_name_extension = length16(server_name_list.len()).to_vec();
    server_name_extension.extend_from_slice(&server_name_list);
    push_extension(&mut extensions, EXTENSION_SERVER_NAME, &server_name_extension);
    let mut versions = vec![2];
    versions.extend_from_slice(&TLS_1_3.to_be_bytes());
    push_extension(&mut extensions, EXTENSION_SUPPORTED_VERSIONS, &versions);

    // Record header 5 bytes, handshake header 4.
    let unpadded = 5 + 4 + body(&extensions).len();
    if at_least > unpadded {
        // The padding extension's own header takes 4 bytes of the difference.
        let padding = (at_least - unpadded).saturating_sub(4);
        push_extension(&mut extensions, EXTENSION_PADDING, &vec![0; padding]);
    }
    let body = body(&extensions);
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
    handshake.extend_from_slice(&length24(body.len()));
    handshake.extend_from_slice(&body);
    let mut record = vec![RECORD_HANDSHAKE];
    record.extend_from_slice(&LEGACY_RECORD_VERSION.to_be_bytes());
    record.extend_from_slice(&length16(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}

/// legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods,
/// extensions.
fn body(extensions: &[u8]) -> Vec<u8> {
    let mut body = LEGACY_VERSION.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x5a; 32]);
    body.push(32);
    body.extend_from_slice(&[0xa5; 32]);
    body.extend_from_slice(&length16(2));
    body.extend_from_slice(&TLS_AES_128_GCM_SHA256.to_be_bytes());
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&length16(extensions.len()));
    body.extend_from_slice(extensions);
    body
}

fn push_extension(extensions: &mut Vec<u8>, kind: u16, data: &[u8]) {
    extensions.extend_from_slice(&kind.to_be_bytes());
    extensions.extend_from_slice(&length16(data.len()));
    extensions.extend_from_slice(data);
}

fn length16(length: usize) -> [u8; 2] {
    u16::try_from(length).expect("a ClientHello part over 64 KiB").to_be_bytes()
}

fn length24(length: usize) -> [u8; 3] {
    let [_, a, b, c] = u32::try_from(length).expect("a ClientHello over 16 MiB").to_be_bytes();
    [a, b, c]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the record the way an SNI router does and returns the host name.
    fn parse_server_name(record: &[u8]) -> Option<String> {
        let record_length = usize::from(u16::from_be_bytes([record[3], record[4]]));
        assert_eq!(record.len(), 5 + record_length, "record length");
        let handshake = &record[5..];
        assert_eq!(handshake[0], HANDSHAKE_CLIENT_HELLO);
        let body_length = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]);
        let body = &handshake[4..];
        assert_eq!(body.len(), body_length as usize, "handshake length");
        let mut at = 2 + 32;
        at += 1 + usize::from(body[at]);
        at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        at += 1 + usize::from(body[at]);
        let extensions_length = usize::from(u16::from_be_bytes([body[at], body[at + 1]]));
        at += 2;
        assert_eq!(body.len(), at + extensions_length, "extensions length");
        while at < body.len() {
            let kind = u16::from_be_bytes([body[at], body[at + 1]]);
            let length = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
            let data = &body[at + 4..at + 4 + length];
            if kind == EXTENSION_SERVER_NAME {
                let name_length = usize::from(u16::from_be_bytes([data[3], data[4]]));
                return Some(String::from_utf8(data[5..5 + name_length].to_vec()).unwrap());
            }
            at += 4 + length;
        }
        None
    }

    #[test]
    fn the_record_parses_and_names_the_server() {
        let record = client_hello("a.example.com", 0);
        assert_eq!(parse_server_name(&record).as_deref(), Some("a.example.com"));
        assert!(record.len() < 200, "{}", record.len());
    }

    #[test]
    fn padding_makes_it_as_large_as_asked() {
        let record = client_hello("b.example.com", POST_QUANTUM_SIZE);
        assert_eq!(record.len(), POST_QUANTUM_SIZE);
        assert_eq!(parse_server_name(&record).as_deref(), Some("b.example.com"));
    }
}
