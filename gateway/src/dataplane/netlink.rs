//! One rtnetlink request and its answers, synchronously: what the data plane asks the kernel
//! outside the programs (routes to endpoints, link settings).

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Sends `payload` and collects the messages of the answer. With `ack`, the kernel confirms
/// (or refuses) a change; an error answer becomes the `Err`.
pub fn request(payload: RouteNetlinkMessage, ack: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut req =
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(payload));
    req.header.flags = NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&buf, 0)?;
    let mut reply = vec![0u8; 16384];
    let n = socket.recv(&mut &mut reply[..], 0)?;
    let mut answers = Vec::new();
    let mut offset = 0;
    while offset < n {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => answers.push(m),
            // An error message with code 0 is the acknowledgement.
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
            _ => {}
        }
        if len == 0 {
            break;
        }
        offset += len;
    }
    Ok(answers)
}
