//! Keys from `wg genkey` / `wg pubkey` / `wg genpsk` (base64, as configs want them).

use std::process::Command;

use anyhow::Result;

use crate::command;

#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private_key: String,
    pub public_key: String,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair> {
        let private_key = command::run(Command::new("wg").arg("genkey"))?.trim().to_string();
        let public_key =
            command::run_with_stdin(Command::new("wg").arg("pubkey"), private_key.as_bytes())?
                .trim()
                .to_string();
        Ok(KeyPair { private_key, public_key })
    }
}

pub fn generate_preshared_key() -> Result<String> {
    Ok(command::run(Command::new("wg").arg("genpsk"))?.trim().to_string())
}
