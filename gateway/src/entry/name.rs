//! Host names as the entry point compares them: what a forward's `--sni`/`--host` may say, and
//! what a ClientHello's server_name or an HTTP Host header is reduced to before a lookup.
//!
//! A name is kept in one canonical form, lowercase ASCII without a trailing dot, so that a
//! lookup is a plain string comparison: DNS names are case-insensitive (RFC 4343), and
//! `example.com.` names the same host as `example.com`.

use std::fmt;

/// The longest name DNS can carry in text form (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A host name, validated and in canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

/// Why a text is not a host name; printed after the name, e.g. "`a..b` is not a host name:
/// it has an empty label".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong,
    EmptyLabel,
    LabelTooLong,
    /// A character other than a letter, digit, `-` or `.`.
    BadCharacter,
    /// A label starting or ending with `-`.
    HyphenAtEdge,
    /// Its last label is numeric: an IPv4 address, or nothing DNS could resolve (RFC 1123
    /// §2.1 keeps top-level labels alphabetic so that names and addresses cannot be confused).
    NumericTopLabel,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "it is empty",
            NameProblem::TooLong => "it is longer than 253 characters",
            NameProblem::EmptyLabel => "it has an empty label",
            NameProblem::LabelTooLong => "it has a label longer than 63 characters",
            NameProblem::BadCharacter => "only letters, digits, '-' and '.' may appear in one",
            NameProblem::HyphenAtEdge => "a label may not start or end with '-'",
            NameProblem::NumericTopLabel => "its last label is a number (an address?)",
        })
    }
}

impl HostName {
    /// Validates `text` as a host name (RFC 1123 §2.1 letters, digits and hyphens in labels of
    /// 1 to 63 characters) and brings it into canonical form. One trailing dot is accepted.
    pub fn parse(text: &str) -> Result<HostName, NameProblem> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            return Err(NameProblem::Empty);
        }
        if trimmed.len() > MAX_NAME {
            return Err(NameProblem::TooLong);
        }
        for label in trimmed.split('.') {
            check_label(label)?;
        }
        let top = trimmed.rsplit('.').next().unwrap_or(trimmed);
        if top.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(NameProblem::NumericTopLabel);
        }
        Ok(HostName(trimmed.to_ascii_lowercase()))
    }

    /// Like [`HostName::parse`], for bytes read off the wire (which may not be UTF-8).
    pub fn from_bytes(bytes: &[u8]) -> Result<HostName, NameProblem> {
        // Every valid name is ASCII; anything else fails as a bad character either way.
        let text = std::str::from_utf8(bytes).map_err(|_| NameProblem::BadCharacter)?;
        HostName::parse(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names this one is under, nearest first: `a.b.example.com` gives `b.example.com`,
    /// `example.com`, `com`. These are what a wildcard `*.<parent>` could match it through.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        let name = self.0.as_str();
        name.match_indices('.').map(move |(dot, _)| &name[dot + 1..])
    }
}

fn check_label(label: &str) -> Result<(), NameProblem> {
    if label.is_empty() {
        return Err(NameProblem::EmptyLabel);
    }
    if label.len() > MAX_LABEL {
        return Err(NameProblem::LabelTooLong);
    }
    if !label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
        return Err(NameProblem::BadCharacter);
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameProblem::HyphenAtEdge);
    }
    Ok(())
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which names a tls or http forward takes.
///
/// A wildcard `*.example.com` takes every name below `example.com`, at any depth
/// (`a.example.com`, `a.b.example.com`), but not `example.com` itself; where several
/// wildcards take a name, the one with the longest suffix wins, and an exact name beats them
/// all. The default takes the connections no other forward on the port takes, including those
/// that carry no name at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    Exact(HostName),
    /// The name after `*.`.
    Wildcard(HostName),
    Default,
}

impl NamePattern {
    /// Reads `name.example.com` or `*.example.com`. (The default is not a name: the CLI says
    /// `--default`.)
    pub fn parse(text: &str) -> Result<NamePattern, NameProblem> {
        match text.strip_prefix("*.") {
            Some(suffix) => HostName::parse(suffix).map(NamePattern::Wildcard),
            // A `*` anywhere else is not a character a name may have.
            None => HostName::parse(text).map(NamePattern::Exact),
        }
    }

    /// Whether this pattern takes `name` (the default takes every name).
    pub fn matches(&self, name: &HostName) -> bool {
        match self {
            NamePattern::Exact(exact) => exact == name,
            NamePattern::Wildcard(suffix) => name.parents().any(|parent| parent == suffix.as_str()),
            NamePattern::Default => true,
        }
    }
}

/// `example.com`, `*.example.com`, or `default`: as `forward list` prints it.
impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(name) => write!(f, "{name}"),
            NamePattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
            NamePattern::Default => f.write_str("default"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HostName {
        HostName::parse(text).unwrap()
    }

    #[test]
    fn names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(name("Www.Example.COM.").as_str(), "www.example.com");
        assert_eq!(name("nas").as_str(), "nas");
        assert_eq!(name("xn--bcher-kva.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(name("3com.example").as_str(), "3com.example");
    }

    #[test]
    fn what_is_not_a_host_name_is_refused_with_the_reason() {
        assert_eq!(HostName::parse(""), Err(NameProblem::Empty));
        assert_eq!(HostName::parse("."), Err(NameProblem::Empty));
        assert_eq!(HostName::parse("a..b"), Err(NameProblem::EmptyLabel));
        assert_eq!(HostName::parse(".a"), Err(NameProblem::EmptyLabel));
        assert_eq!(HostName::parse("a.b.."), Err(NameProblem::EmptyLabel));
        assert_eq!(HostName::parse("under_score.example"), Err(NameProblem::BadCharacter));
        assert_eq!(HostName::parse("sp ace.example"), Err(NameProblem::BadCharacter));
        assert_eq!(HostName::parse("bücher.example"), Err(NameProblem::BadCharacter));
        assert_eq!(HostName::parse("a.*.example"), Err(NameProblem::BadCharacter));
        assert_eq!(HostName::parse("host:443"), Err(NameProblem::BadCharacter));
        assert_eq!(HostName::parse("-a.example"), Err(NameProblem::HyphenAtEdge));
        assert_eq!(HostName::parse("a-.example"), Err(NameProblem::HyphenAtEdge));
        assert_eq!(HostName::parse("192.0.2.1"), Err(NameProblem::NumericTopLabel));
        assert_eq!(HostName::from_bytes(b"a\xff.example"), Err(NameProblem::BadCharacter));
        let label = "a".repeat(64);
        assert_eq!(HostName::parse(&label), Err(NameProblem::LabelTooLong));
        assert!(HostName::parse(&"a".repeat(63)).is_ok());
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long.len(), 253);
        assert!(HostName::parse(&long).is_ok());
        assert_eq!(HostName::parse(&format!("{long}e")), Err(NameProblem::TooLong));
        assert_eq!(HostName::parse(&format!("x.{long}")), Err(NameProblem::TooLong));
    }

    #[test]
    fn parents_run_from_the_nearest_to_the_top() {
        let deep = name("a.b.example.com");
        let parents: Vec<&str> = deep.parents().collect();
        assert_eq!(parents, ["b.example.com", "example.com", "com"]);
        assert_eq!(name("localhost").parents().count(), 0);
    }

    #[test]
    fn wildcards_take_names_below_their_suffix_at_any_depth_but_not_the_suffix() {
        let wildcard = NamePattern::parse("*.Example.com").unwrap();
        assert_eq!(wildcard, NamePattern::Wildcard(name("example.com")));
        assert_eq!(wildcard.to_string(), "*.example.com");
        assert!(wildcard.matches(&name("www.example.com")));
        assert!(wildcard.matches(&name("a.b.example.com")));
        assert!(!wildcard.matches(&name("example.com")));
        assert!(!wildcard.matches(&name("badexample.com")));
        assert!(!wildcard.matches(&name("example.com.evil")));
        let exact = NamePattern::parse("example.com").unwrap();
        assert!(exact.matches(&name("EXAMPLE.com")));
        assert!(!exact.matches(&name("www.example.com")));
        assert!(NamePattern::Default.matches(&name("anything")));
    }

    #[test]
    fn a_star_is_only_a_whole_first_label() {
        assert_eq!(NamePattern::parse("*"), Err(NameProblem::BadCharacter));
        assert_eq!(NamePattern::parse("*."), Err(NameProblem::Empty));
        assert_eq!(NamePattern::parse("*example.com"), Err(NameProblem::BadCharacter));
        assert_eq!(NamePattern::parse("www.*.com"), Err(NameProblem::BadCharacter));
        assert_eq!(NamePattern::parse("*.*.com"), Err(NameProblem::BadCharacter));
    }
}
