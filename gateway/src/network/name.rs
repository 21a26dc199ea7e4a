//! Member and network names: DNS labels, because `member.network` is what the network's DNS
//! server answers for. Lowercase ASCII letters, digits and inner hyphens, 1 to 63 bytes;
//! names are compared and stored lowercase, so `NAS` and `nas` are one member.

use std::fmt;

/// A valid DNS label, lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a text is not a name: one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    pub text: String,
    pub why: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}' is not a name: {}", self.text, self.why)
    }
}

impl std::error::Error for NameError {}

const MAX_LABEL: usize = 63;

impl Name {
    pub fn parse(text: &str) -> Result<Name, NameError> {
        let refuse = |why| Err(NameError { text: text.to_string(), why });
        if text.is_empty() {
            return refuse("it is empty");
        }
        if text.len() > MAX_LABEL {
            return refuse("a name is at most 63 characters (one DNS label)");
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return refuse("only letters, digits and '-' (one DNS label, no dots)");
        }
        if text.starts_with('-') || text.ends_with('-') {
            return refuse("it may not begin or end with '-'");
        }
        Ok(Name(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_kept_lowercase() {
        assert_eq!(Name::parse("NAS-2").unwrap().as_str(), "nas-2");
        assert_eq!(Name::parse(&"a".repeat(63)).unwrap().as_str().len(), 63);
        for (text, why) in [
            ("", "it is empty"),
            ("-nas", "it may not begin or end with '-'"),
            ("nas-", "it may not begin or end with '-'"),
            ("nas.home", "only letters, digits and '-' (one DNS label, no dots)"),
            ("naß", "only letters, digits and '-' (one DNS label, no dots)"),
        ] {
            assert_eq!(Name::parse(text).unwrap_err().why, why, "{text:?}");
        }
        let long = "a".repeat(64);
        assert_eq!(
            Name::parse(&long).unwrap_err().to_string(),
            format!("`{long}' is not a name: a name is at most 63 characters (one DNS label)")
        );
    }
}
