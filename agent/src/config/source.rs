//! Source files of the configuration and where things are in them.
//!
//! Validation works on plain structures and names what it found wrong by key path
//! (`devices[2].unit_id`); a [`SourceFile`] turns that path back into a line number using the
//! spans of a `toml_edit` parse of the same text. A key that is absent (a missing field) resolves
//! to the line of the nearest enclosing table that exists.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Document, Item};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An index into an array of tables or an array.
    Index(usize),
}

/// A key path inside one file, e.g. `devices[2].unit_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The root of the file.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The text of one configuration or profile file, parsed for spans.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
    doc: Option<Document<String>>,
}

impl SourceFile {
    /// Keeps `text` read from `path`; a syntax error leaves no spans (serde reports it instead).
    pub fn new(path: &Path, text: String) -> Self {
        let doc = Document::parse(text.clone()).ok();
        SourceFile {
            path: path.to_owned(),
            text,
            doc,
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Line where `path` is written, or where its nearest existing parent is.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Item(doc.as_item());
        let mut best: Option<Range<usize>> = None;
        for seg in &path.0 {
            let Some((span, next)) = node.step(seg) else {
                break;
            };
            if span.is_some() {
                best = span;
            }
            node = next;
        }
        best.map(|s| self.line_of_offset(s.start))
    }

    /// Key path of the innermost key whose span holds `offset` (for serde's errors).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let Some(doc) = self.doc.as_ref() else {
            return KeyPath::root();
        };
        let mut path = KeyPath::root();
        walk_to(doc.as_table(), offset, &mut path);
        path
    }
}

/// Where a walk along a key path stands.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value,
}

impl<'a> Node<'a> {
    /// One step along the path: the span of what was found and where the walk stands then.
    fn step(self, seg: &Seg) -> Option<(Option<Range<usize>>, Node<'a>)> {
        match (seg, self) {
            (Seg::Key(k), Node::Table(t)) => t
                .get_key_value(k)
                .map(|(key, child)| (key.span().or_else(|| child.span()), Node::Item(child))),
            (Seg::Key(k), Node::Item(item)) => item
                .as_table_like()
                .and_then(|t| t.get_key_value(k))
                .map(|(key, child)| (key.span().or_else(|| child.span()), Node::Item(child))),
            (Seg::Index(n), Node::Item(item)) => {
                if let Some(tables) = item.as_array_of_tables() {
                    tables.get(*n).map(|t| (t.span(), Node::Table(t)))
                } else {
                    item.as_array()
                        .and_then(|a| a.get(*n))
                        .map(|v| (v.span(), Node::Value))
                }
            }
            _ => None,
        }
    }
}

fn walk_to<'a>(table: &'a dyn toml_edit::TableLike, offset: usize, path: &mut KeyPath) {
    // Of all entries (and all tables of arrays of tables), take the one that starts last at or
    // before `offset`: the innermost thing the offset can belong to at this level.
    let mut chosen: Option<(usize, Vec<Seg>, Node<'a>)> = None;
    let mut consider = |start: Option<usize>, segs: Vec<Seg>, node: Node<'a>| {
        if let Some(start) = start {
            if start <= offset && chosen.as_ref().is_none_or(|(s, _, _)| start >= *s) {
                chosen = Some((start, segs, node));
            }
        }
    };
    for (key, item) in table.iter() {
        if let Some(tables) = item.as_array_of_tables() {
            for (i, t) in tables.iter().enumerate() {
                let segs = vec![Seg::Key(key.to_owned()), Seg::Index(i)];
                consider(t.span().map(|s| s.start), segs, Node::Table(t));
            }
            continue;
        }
        let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
        let start = key_span.or_else(|| item.span()).map(|s| s.start);
        consider(start, vec![Seg::Key(key.to_owned())], Node::Item(item));
    }
    let Some((_, segs, node)) = chosen else {
        return;
    };
    path.0.extend(segs);
    match node {
        Node::Table(t) => walk_to(t, offset, path),
        Node::Item(item) => {
            if let Some(t) = item.as_table_like() {
                walk_to(t, offset, path);
            }
        }
        Node::Value => {}
    }
}
