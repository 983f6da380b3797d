//! Relation names and SQL quoting. Every identifier deltamv writes into SQL text is quoted,
//! always, so reserved words, mixed case and quotes inside names are safe.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A schema-qualified relation name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Whether a user's `schema.name` or bare `name` names this relation.
    pub fn matches(&self, given: &str) -> bool {
        self.name == given || self.to_string() == given
    }

    /// The name quoted for use in SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an identifier for SQL text (always, so reserved words and mixed case are safe).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL text.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_the_quote_character() {
        assert_eq!(quote_ident("Order \"x\""), "\"Order \"\"x\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(QualifiedName::new("a b", "C").quoted(), "\"a b\".\"C\"");
    }
}
