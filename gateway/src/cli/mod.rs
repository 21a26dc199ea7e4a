//! The pieces of the `gateway` command line (`src/bin/gateway.rs` is only its clap front):
//!
//! - [`source`]: reading a running gatewayd — its status socket and its UAPI — and naming a
//!   peer by its public key or a unique prefix of it;
//! - [`table`] and [`human`]: aligned tables, byte counts and "1 minute, 3 seconds ago";
//! - [`status`], [`peers`], [`routes`], [`forwards`]: each read command, as text and as JSON;
//! - [`export`]: a stock WireGuard client's configuration for a peer, as text, a terminal QR
//!   code or a PNG;
//! - [`edit`]: `add-peer` and `remove-peer`; [`keys`]: `genkey` and `pubkey`;
//! - [`network`]: `network …` and `route …`, the interface's place in its network.
//!
//! Every function returns the one line an operator reads on failure as its error.

pub mod edit;
pub mod export;
pub mod forwards;
pub mod human;
pub mod keys;
pub mod network;
pub mod peers;
pub mod reload;
pub mod routes;
pub mod source;
pub mod status;
pub mod table;

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

/// A read command's answer: `value` as JSON with `--json`, else as `text` renders it.
pub fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), String> {
    if json {
        print_json(value)
    } else {
        print!("{}", text(value));
        Ok(())
    }
}
