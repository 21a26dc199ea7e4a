//! A path-compressed binary trie over left-aligned 128-bit keys: one instance per address
//! family (IPv4 keys occupy the top 32 bits).
//!
//! Every node is a prefix. A node either carries a value or is a "glue" node that only exists
//! to join exactly two subtrees that diverge at its length; removing values collapses glue
//! nodes again, so the trie never holds more than `2 * len - 1` nodes. Nodes live in an arena
//! (`Vec`) addressed by index, with a free list, which keeps inserts cheap: one allocation-free
//! descent of at most one node per distinct branching point.

/// Where a node hangs: the root, or one side of a parent.
#[derive(Clone, Copy)]
enum Link {
    Root,
    Child { parent: u32, side: usize },
}

struct Node<V> {
    /// The prefix, left-aligned, with every bit past `prefix_len` cleared.
    key: u128,
    prefix_len: u8,
    value: Option<V>,
    children: [Option<u32>; 2],
}

pub(super) struct Trie<V> {
    nodes: Vec<Node<V>>,
    free: Vec<u32>,
    root: Option<u32>,
    values: usize,
}

pub(super) fn mask(key: u128, prefix_len: u8) -> u128 {
    if prefix_len == 0 { 0 } else { key & (u128::MAX << (128 - u32::from(prefix_len))) }
}

/// The bit at `position` (0 = most significant). Callers pass `position < 128`.
fn bit(key: u128, position: u8) -> usize {
    ((key >> (127 - u32::from(position))) & 1) as usize
}

fn common_prefix_len(a: u128, b: u128) -> u8 {
    // At most 128, which fits.
    (a ^ b).leading_zeros() as u8
}

impl<V> Trie<V> {
    pub(super) fn new() -> Self {
        Trie { nodes: Vec::new(), free: Vec::new(), root: None, values: 0 }
    }

    pub(super) fn len(&self) -> usize {
        self.values
    }

    fn link_target(&self, link: Link) -> Option<u32> {
        match link {
            Link::Root => self.root,
            Link::Child { parent, side } => self.nodes[parent as usize].children[side],
        }
    }

    fn set_link(&mut self, link: Link, target: Option<u32>) {
        match link {
            Link::Root => self.root = target,
            Link::Child { parent, side } => self.nodes[parent as usize].children[side] = target,
        }
    }

    fn allocate(&mut self, node: Node<V>) -> u32 {
        if let Some(index) = self.free.pop() {
            self.nodes[index as usize] = node;
            index
        } else {
            self.nodes.push(node);
            // A trie of 2^32 nodes would need far more memory than any configuration has.
            (self.nodes.len() - 1) as u32
        }
    }

    fn release(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.value = None;
        node.children = [None, None];
        self.free.push(index);
    }

    /// Stores `value` at `key/prefix_len` (host bits are masked off) and returns the value that
    /// was there before, if any.
    pub(super) fn insert(&mut self, key: u128, prefix_len: u8, value: V) -> Option<V> {
        let key = mask(key, prefix_len);
        let mut link = Link::Root;
        loop {
            let Some(index) = self.link_target(link) else {
                let leaf = self.allocate(Node {
                    key,
                    prefix_len,
                    value: Some(value),
                    children: [None, None],
                });
                self.set_link(link, Some(leaf));
                self.values += 1;
                return None;
            };
            let node = &mut self.nodes[index as usize];
            let common = common_prefix_len(key, node.key).min(prefix_len).min(node.prefix_len);
            if common == node.prefix_len {
                if prefix_len == node.prefix_len {
                    let previous = node.value.replace(value);
                    if previous.is_none() {
                        self.values += 1;
                    }
                    return previous;
                }
                link = Link::Child { parent: index, side: bit(key, node.prefix_len) };
                continue;
            }
            let existing_key = node.key;
            let new_node = if common == prefix_len {
                // The new prefix covers the existing node: it becomes its parent.
                let mut children = [None, None];
                children[bit(existing_key, prefix_len)] = Some(index);
                self.allocate(Node { key, prefix_len, value: Some(value), children })
            } else {
                // The prefixes diverge at bit `common`: join them under a glue node.
                let leaf = self.allocate(Node {
                    key,
                    prefix_len,
                    value: Some(value),
                    children: [None, None],
                });
                let mut children = [None, None];
                children[bit(key, common)] = Some(leaf);
                children[bit(existing_key, common)] = Some(index);
                self.allocate(Node {
                    key: mask(key, common),
                    prefix_len: common,
                    value: None,
                    children,
                })
            };
            self.set_link(link, Some(new_node));
            self.values += 1;
            return None;
        }
    }

    /// The link to the node holding exactly `key/prefix_len`, and the link to its parent.
    fn find_exact(&self, key: u128, prefix_len: u8) -> Option<(Link, Option<Link>)> {
        let key = mask(key, prefix_len);
        let (mut parent, mut link) = (None, Link::Root);
        loop {
            let index = self.link_target(link)?;
            let node = &self.nodes[index as usize];
            if node.prefix_len > prefix_len || common_prefix_len(key, node.key) < node.prefix_len {
                return None;
            }
            if node.prefix_len == prefix_len {
                return Some((link, parent));
            }
            parent = Some(link);
            link = Link::Child { parent: index, side: bit(key, node.prefix_len) };
        }
    }

    /// The value stored at exactly `key/prefix_len`.
    pub(super) fn get(&self, key: u128, prefix_len: u8) -> Option<&V> {
        let (link, _) = self.find_exact(key, prefix_len)?;
        let index = self.link_target(link)?;
        self.nodes[index as usize].value.as_ref()
    }

    /// Removes the value stored at exactly `key/prefix_len` and returns it.
    pub(super) fn remove(&mut self, key: u128, prefix_len: u8) -> Option<V> {
        let (link, parent) = self.find_exact(key, prefix_len)?;
        let index = self.link_target(link)?;
        let removed = self.nodes[index as usize].value.take()?;
        self.values -= 1;
        let children = self.nodes[index as usize].children;
        match children {
            [Some(_), Some(_)] => {} // Still joins two subtrees: it stays, as glue.
            [Some(only), None] | [None, Some(only)] => {
                self.set_link(link, Some(only));
                self.release(index);
            }
            [None, None] => {
                self.set_link(link, None);
                self.release(index);
                if let Some(parent_link) = parent {
                    self.collapse_glue(parent_link);
                }
            }
        }
        Some(removed)
    }

    /// A glue node that lost one of its two subtrees is replaced by the other.
    fn collapse_glue(&mut self, link: Link) {
        let Some(index) = self.link_target(link) else { return };
        let node = &self.nodes[index as usize];
        if node.value.is_some() {
            return;
        }
        let remaining = match node.children {
            [Some(only), None] | [None, Some(only)] => only,
            _ => return,
        };
        self.set_link(link, Some(remaining));
        self.release(index);
    }

    /// The value of the longest stored prefix containing `key`.
    pub(super) fn longest_match(&self, key: u128) -> Option<&V> {
        let mut best = None;
        let mut next = self.root;
        while let Some(index) = next {
            let node = &self.nodes[index as usize];
            if common_prefix_len(key, node.key) < node.prefix_len {
                break;
            }
            if let Some(value) = &node.value {
                best = Some(value);
            }
            if node.prefix_len == 128 {
                break;
            }
            next = node.children[bit(key, node.prefix_len)];
        }
        best
    }

    /// Every stored prefix and value, in address order (a prefix before the longer prefixes it
    /// contains).
    pub(super) fn iter(&self) -> TrieIter<'_, V> {
        TrieIter { trie: self, stack: self.root.into_iter().collect() }
    }

    pub(super) fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.root = None;
        self.values = 0;
    }

    /// How many nodes (valued or glue) are reachable: for the structural tests.
    #[cfg(test)]
    pub(super) fn reachable_nodes(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<u32> = self.root.into_iter().collect();
        while let Some(index) = stack.pop() {
            count += 1;
            let node = &self.nodes[index as usize];
            assert!(
                node.value.is_some() || node.children.iter().all(Option::is_some),
                "glue node {:#x}/{} does not join two subtrees",
                node.key,
                node.prefix_len
            );
            stack.extend(node.children.iter().flatten());
        }
        count
    }
}

pub(super) struct TrieIter<'a, V> {
    trie: &'a Trie<V>,
    stack: Vec<u32>,
}

impl<'a, V> Iterator for TrieIter<'a, V> {
    type Item = (u128, u8, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(index) = self.stack.pop() {
            let node = &self.trie.nodes[index as usize];
            // Side 1 is pushed first so that side 0 (lower addresses) comes out first.
            self.stack.extend(node.children.iter().rev().flatten());
            if let Some(value) = &node.value {
                return Some((node.key, node.prefix_len, value));
            }
        }
        None
    }
}
