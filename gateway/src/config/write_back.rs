//! Changes made while the daemon runs, written back into its configuration file so that the
//! file and the daemon never disagree (issue 12). The file is edited as a document
//! (`toml_edit`), not regenerated: the operator's comments, order and layout survive, and only
//! the tables that changed are touched. Each write replaces the file atomically (`atomic.rs`).

use std::path::Path;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

use super::atomic;
use crate::entry::forward::Forward;
use crate::entry::store::ForwardRecord;
use crate::entry::table::ForwardTable;

/// Rewrites the `[[forward]]` tables of the file at `path` to hold exactly `table`'s forwards.
pub fn save_forwards(path: &Path, table: &ForwardTable) -> Result<(), String> {
    edit(path, |document| set_forwards(document, table))
}

/// Reads the file at `path`, lets `change` edit it, and writes it back if it changed.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {} to update it: {e}", path.display()))?;
    let mut document: DocumentMut =
        text.parse().map_err(|e| format!("cannot update {}: {e}", path.display()))?;
    change(&mut document)?;
    let updated = document.to_string();
    if updated == text {
        return Ok(());
    }
    atomic::replace_file(path, &updated)
}

/// Keeps the `[[forward]]` tables that still describe a forward of `table` (as written, with
/// their comments), drops the others, and appends one for each forward no table described.
pub fn set_forwards(document: &mut DocumentMut, table: &ForwardTable) -> Result<(), String> {
    let wanted = table.forwards();
    let mut described = vec![false; wanted.len()];
    let mut forwards = ArrayOfTables::new();
    if let Some(existing) = document.get("forward").and_then(Item::as_array_of_tables) {
        for written in existing.iter() {
            let Some(forward) = forward_of(written) else { continue };
            if let Some(index) = wanted.iter().position(|w| *w == forward)
                && !described[index]
            {
                described[index] = true;
                forwards.push(written.clone());
            }
        }
    }
    for (forward, _) in wanted.iter().zip(&described).filter(|(_, done)| !**done) {
        forwards.push(table_of(&ForwardRecord::from(forward))?);
    }
    if forwards.is_empty() {
        document.remove("forward");
    } else {
        document.insert("forward", Item::ArrayOfTables(forwards));
    }
    Ok(())
}

/// The forward a written `[[forward]]` table makes, if it makes one.
fn forward_of(written: &Table) -> Option<Forward> {
    let mut alone = Table::new();
    for (key, value) in written.iter() {
        alone.insert(key, value.clone());
    }
    let record: ForwardRecord = toml::from_str(&alone.to_string()).ok()?;
    record.to_forward().ok()
}

/// A new table holding `value`'s fields, as `toml` writes them.
fn table_of(value: &impl serde::Serialize) -> Result<Table, String> {
    let text = toml::to_string(value).map_err(|e| format!("cannot write a table: {e}"))?;
    let document: DocumentMut = text.parse().map_err(|e| format!("cannot write a table: {e}"))?;
    Ok(document.as_table().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::Forward;

    fn table(lines: &[&str]) -> ForwardTable {
        ForwardTable::from_forwards(lines.iter().map(|words| Forward::from_words(words))).unwrap()
    }

    const FILE: &str = r#"# my gateway
[interface]
listen_port = 51820 # the public port

# ssh to the NAS
[[forward]]
protocol = "tcp"
ports = "2222"
to = "10.8.0.2:22"

# the web server
[[forward]]
protocol = "tcp"
ports = "80"
to = "10.8.0.3"
"#;

    #[test]
    fn forwards_are_added_and_removed_keeping_the_rest_of_the_file() {
        let mut document: DocumentMut = FILE.parse().unwrap();
        let wanted = table(&["tcp 2222 --to 10.8.0.2:22", "udp 53 --to 10.8.0.4"]);
        set_forwards(&mut document, &wanted).unwrap();
        let text = document.to_string();
        assert!(
            text.starts_with("# my gateway\n[interface]\nlisten_port = 51820 # the public port\n"),
            "{text}"
        );
        assert!(
            text.contains("# ssh to the NAS\n[[forward]]\nprotocol = \"tcp\"\nports = \"2222\""),
            "{text}"
        );
        assert!(!text.contains("the web server") && !text.contains("\"80\""), "{text}");
        assert!(
            text.contains("[[forward]]\nprotocol = \"udp\"\nports = \"53\"\nto = \"10.8.0.4\"\n"),
            "{text}"
        );
        let reread = crate::config::load::parse(Path::new("wg0.toml"), &text).unwrap();
        assert_eq!(reread.forwards.forwards(), wanted.forwards());

        set_forwards(&mut document, &ForwardTable::new()).unwrap();
        let text = document.to_string();
        assert!(!text.contains("[[forward]]"), "{text}");
        assert!(text.contains("listen_port = 51820 # the public port"), "{text}");
    }
}
