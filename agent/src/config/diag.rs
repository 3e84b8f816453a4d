//! Errors and warnings, located as `FILE:LINE:COL: <object>: field '<field>': <message>`.

use std::fmt;
use std::ops::Range;

/// What kind of section an object comes from; also its name in messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Agent,
    Link,
    Gateway,
    Router,
    Rule,
    ReturnRoute,
    Hook,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Link => "link",
            Kind::Gateway => "gateway",
            Kind::Router => "router",
            Kind::Rule => "rule",
            Kind::ReturnRoute => "return_route",
            Kind::Hook => "hook",
        }
    }

    /// The TOML header of this kind of section, e.g. `[[link]]`.
    pub fn header(self) -> &'static str {
        match self {
            Kind::Agent => "[agent]",
            Kind::Link => "[[link]]",
            Kind::Gateway => "[[gateway]]",
            Kind::Router => "[[router]]",
            Kind::Rule => "[[rule]]",
            Kind::ReturnRoute => "[[return_route]]",
            Kind::Hook => "[[hook]]",
        }
    }
}

/// The object a diagnostic is about: `router 'ProductionRouter'`, `rule #3` (unnamed, 1-based
/// position among its kind) or `agent`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Object {
    pub kind: Kind,
    pub name: Option<String>,
    /// 0-based position among the sections of this kind.
    pub index: usize,
}

impl Object {
    pub fn new(kind: Kind, name: Option<&str>, index: usize) -> Object {
        Object {
            kind,
            name: name.map(str::to_owned),
            index,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.name) {
            (Kind::Agent, _) => f.write_str("agent"),
            (k, Some(n)) => write!(f, "{} '{n}'", k.as_str()),
            (k, None) => write!(f, "{} #{}", k.as_str(), self.index + 1),
        }
    }
}

/// One configuration error.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigError {
    /// The file name as given to [`super::load`] or [`super::parse`].
    pub file: String,
    /// 1-based line and column (in characters); `None` when the file could not be read.
    pub position: Option<(usize, usize)>,
    /// `router 'ProductionRouter'`, `rule #3`, `agent`; `None` for syntax errors.
    pub object: Option<String>,
    /// Path of the field inside the object, e.g. `backups[1].gateway`.
    pub field: Option<String>,
    /// What is wrong; what to do.
    pub message: String,
}

/// A suspicious but legal setting, in the same format as [`ConfigError`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Warning {
    pub file: String,
    pub position: Option<(usize, usize)>,
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

fn write_diag(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    position: Option<(usize, usize)>,
    object: &Option<String>,
    field: &Option<String>,
    message: &str,
) -> fmt::Result {
    match position {
        Some((line, col)) => write!(f, "{file}:{line}:{col}: ")?,
        None => write!(f, "{file}: ")?,
    }
    if let Some(o) = object {
        write!(f, "{o}: ")?;
    }
    if let Some(field) = field {
        write!(f, "field '{field}': ")?;
    }
    f.write_str(message)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_diag(
            f,
            &self.file,
            self.position,
            &self.object,
            &self.field,
            &self.message,
        )
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_diag(
            f,
            &self.file,
            self.position,
            &self.object,
            &self.field,
            &self.message,
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration (never empty), in file order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

/// One error per line, no trailing newline.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects diagnostics against one source text; turns byte offsets into line:column.
pub(crate) struct Sink<'a> {
    file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
    errors: Vec<(usize, ConfigError)>,
    warnings: Vec<(usize, Warning)>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Sink<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Sink {
            file,
            text,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and column (characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }

    pub fn error(
        &mut self,
        span: &Range<usize>,
        object: Option<&Object>,
        field: Option<&str>,
        message: String,
    ) {
        let e = ConfigError {
            file: self.file.to_owned(),
            position: Some(self.position(span.start)),
            object: object.map(|o| o.to_string()),
            field: field.map(str::to_owned),
            message,
        };
        self.errors.push((span.start, e));
    }

    pub fn warning(
        &mut self,
        span: &Range<usize>,
        object: Option<&Object>,
        field: Option<&str>,
        message: String,
    ) {
        let w = Warning {
            file: self.file.to_owned(),
            position: Some(self.position(span.start)),
            object: object.map(|o| o.to_string()),
            field: field.map(str::to_owned),
            message,
        };
        self.warnings.push((span.start, w));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Errors (if any) and warnings, each sorted by position (stable for equal positions).
    pub fn finish(mut self) -> (Vec<ConfigError>, Vec<Warning>) {
        self.errors.sort_by_key(|(o, _)| *o);
        self.warnings.sort_by_key(|(o, _)| *o);
        (
            self.errors.into_iter().map(|(_, e)| e).collect(),
            self.warnings.into_iter().map(|(_, w)| w).collect(),
        )
    }
}

/// The closest candidate to `name` (case-insensitive edit distance at most 2, or equal
/// ignoring case), for "did you mean" hints.
pub(crate) fn suggest<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = name.to_lowercase();
    let close: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|&(d, c)| d <= 2.min(c.chars().count().saturating_sub(1)))
        .collect();
    let best = close.iter().map(|&(d, _)| d).min()?;
    let mut at_best = close.iter().filter(|&&(d, _)| d == best);
    let first = at_best.next()?.1;
    // Several equally close candidates (WAN4 vs WAN1, WAN2, WAN3): no guess.
    at_best.next().is_none().then_some(first)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let s = Sink::new("f", "ab\né = 1\n\nx");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(1), (1, 2));
        assert_eq!(s.position(3), (2, 1));
        // 'é' is two bytes: the '=' after "é " is the third character.
        assert_eq!(s.position(6), (2, 3));
        assert_eq!(s.position(10), (3, 1));
        assert_eq!(s.position(11), (4, 1));
    }

    #[test]
    fn suggestions() {
        let c = ["RemoteTunWAN1", "RemoteTunWAN2", "interface"];
        assert_eq!(suggest("remotetunwan1", c), Some("RemoteTunWAN1"));
        assert_eq!(suggest("RemoteTunWAN4", c), None);
        assert_eq!(
            suggest("RemoteTunWAN4", ["RemoteTunWAN1"]),
            Some("RemoteTunWAN1")
        );
        assert_eq!(suggest("interfce", c), Some("interface"));
        assert_eq!(suggest("xyz", c), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn display_format() {
        let e = ConfigError {
            file: "seed.toml".into(),
            position: Some((42, 13)),
            object: Some("router 'ProductionRouter'".into()),
            field: Some("backups[1].gateway".into()),
            message: "unknown gateway 'X'; define it".into(),
        };
        assert_eq!(
            e.to_string(),
            "seed.toml:42:13: router 'ProductionRouter': field 'backups[1].gateway': \
             unknown gateway 'X'; define it"
        );
    }
}
