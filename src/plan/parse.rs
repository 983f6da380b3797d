//! Reading view definition files.
//!
//! Each `*.sql` file in the views directory holds one `CREATE MATERIALIZED VIEW schema.name AS
//! <query>;` and optionally `CREATE [UNIQUE] INDEX ... ON schema.name (...)`. The query text is kept
//! exactly as written: PostgreSQL evaluates that text when `init` creates the target and when
//! `reconcile` recomputes the view, so the oracle is never a re-printed approximation.

use std::path::{Path, PathBuf};

use sqlparser::ast::{ObjectName, ObjectNamePart, Query, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::{PlanError, QualifiedName, ViewError};

/// One parsed view file.
#[derive(Debug, Clone)]
pub struct ViewFile {
    pub path: PathBuf,
    pub name: QualifiedName,
    pub query: Query,
    pub query_sql: String,
    pub index_sql: Vec<String>,
}

/// Errors reading the views directory.
#[derive(Debug, thiserror::Error)]
pub enum ViewFileError {
    #[error("cannot read views directory {dir}: {source} (set --views or DELTAMV_VIEWS)")]
    Dir { dir: String, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    File {
        file: String,
        source: std::io::Error,
    },
    #[error("no *.sql view definitions in {0} (set --views or DELTAMV_VIEWS)")]
    Empty(String),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("view {0} is defined twice ({1} and {2})")]
    Duplicate(String, String, String),
}

/// Reads every `*.sql` file of `dir`, sorted by file name.
pub fn read_views_dir(dir: &Path) -> Result<Vec<ViewFile>, ViewFileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ViewFileError::Dir {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ViewFileError::Empty(dir.display().to_string()));
    }
    let mut views: Vec<ViewFile> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| ViewFileError::File {
            file: path.display().to_string(),
            source,
        })?;
        let view = parse_view_file(&path, &text)?;
        if let Some(prev) = views.iter().find(|v| v.name == view.name) {
            return Err(ViewFileError::Duplicate(
                view.name.to_string(),
                prev.path.display().to_string(),
                path.display().to_string(),
            ));
        }
        views.push(view);
    }
    Ok(views)
}

/// Parses one view file's text.
pub fn parse_view_file(path: &Path, text: &str) -> Result<ViewFile, ViewError> {
    let file = path.display().to_string();
    let fail = |view: &str, error: PlanError| ViewError {
        view: view.to_string(),
        file: file.clone(),
        error,
    };
    let mut view: Option<ViewFile> = None;
    let mut indexes: Vec<(QualifiedName, String)> = Vec::new();
    for stmt_text in split_statements(text) {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, &stmt_text).map_err(|e| {
            // Name the view even though its statement does not parse.
            let name = view_name_hint(&stmt_text)
                .or_else(|| view.as_ref().map(|v| v.name.to_string()))
                .unwrap_or_else(|| "?".into());
            fail(&name, PlanError::Invalid(format!("SQL syntax error: {e}")))
        })?;
        for stmt in stmts {
            match stmt {
                Statement::CreateView {
                    materialized: true,
                    name,
                    query,
                    columns,
                    ..
                } => {
                    let name = qualified(&name).map_err(|e| fail(&name.to_string(), e))?;
                    if view.is_some() {
                        return Err(fail(
                            &name.to_string(),
                            PlanError::Invalid("more than one view in one file".into()),
                        ));
                    }
                    if !columns.is_empty() {
                        return Err(fail(
                            &name.to_string(),
                            PlanError::Unsupported("a column list after the view name".into()),
                        ));
                    }
                    let query_sql = query_text(&stmt_text).ok_or_else(|| {
                        fail(
                            &name.to_string(),
                            PlanError::Invalid("cannot find AS <query>".into()),
                        )
                    })?;
                    view = Some(ViewFile {
                        path: path.to_path_buf(),
                        name,
                        query: *query,
                        query_sql,
                        index_sql: vec![],
                    });
                }
                Statement::CreateIndex(ci) => {
                    let table = qualified(&ci.table_name).map_err(|e| fail("?", e))?;
                    indexes.push((table, stmt_text.trim().to_string()));
                }
                other => {
                    let head: String = other.to_string().chars().take(60).collect();
                    return Err(fail(
                        "?",
                        PlanError::Unsupported(format!(
                            "statement `{head}`: a view file holds one CREATE MATERIALIZED VIEW and its CREATE INDEX statements"
                        )),
                    ));
                }
            }
        }
    }
    let mut view = view.ok_or_else(|| {
        fail(
            "?",
            PlanError::Invalid("no CREATE MATERIALIZED VIEW in the file".into()),
        )
    })?;
    for (table, sql) in indexes {
        if table != view.name {
            return Err(fail(
                &view.name.to_string(),
                PlanError::Invalid(format!("index on {table}, not on the view")),
            ));
        }
        view.index_sql.push(sql);
    }
    Ok(view)
}

/// The name after `CREATE MATERIALIZED VIEW [IF NOT EXISTS]` in a statement that does not parse
/// (unquoted names folded to lower case), for error messages.
fn view_name_hint(stmt: &str) -> Option<String> {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let at = words.windows(3).position(|w| {
        w[0].eq_ignore_ascii_case("create")
            && w[1].eq_ignore_ascii_case("materialized")
            && w[2].eq_ignore_ascii_case("view")
    })?;
    let mut rest = words.get(at + 3..)?.iter();
    let mut name = *rest.next()?;
    if name.eq_ignore_ascii_case("if") {
        name = *rest.nth(2)?;
    }
    let name = name.split('(').next().unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    Some(if name.contains('"') {
        name.replace('"', "")
    } else {
        name.to_lowercase()
    })
}

/// `schema.name`, requiring the schema (targets live in a named schema).
pub fn qualified(name: &ObjectName) -> Result<QualifiedName, PlanError> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) if id.quote_style.is_some() => Ok(id.value.clone()),
            ObjectNamePart::Identifier(id) => Ok(id.value.to_lowercase()),
            other => Err(PlanError::Unsupported(format!("name part {other}"))),
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [schema, name] => Ok(QualifiedName::new(schema, name)),
        [name] => Ok(QualifiedName::new("public", name)),
        _ => Err(PlanError::Invalid(format!(
            "name {name} must be schema.name"
        ))),
    }
}

/// Splits SQL text into statements at semicolons outside quotes and comments.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' => {
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    cur.push(chars[i]);
                    if chars[i] == c {
                        break;
                    }
                    i += 1;
                }
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                cur.push('\n');
            }
            '/' if next == Some('*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 1;
                cur.push(' ');
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The text after the first top-level `AS` keyword of a CREATE MATERIALIZED VIEW statement.
fn query_text(stmt: &str) -> Option<String> {
    let bytes = stmt.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
        } else {
            match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'a' | b'A' if depth == 0 && i + 2 <= bytes.len() => {
                    let word = &stmt[i..i + 2];
                    let before_ok = i == 0 || !is_word_byte(bytes[i - 1]);
                    let after_ok = i + 2 == bytes.len() || !is_word_byte(bytes[i + 2]);
                    if word.eq_ignore_ascii_case("as") && before_ok && after_ok {
                        return Some(stmt[i + 2..].trim().to_string());
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_view_and_index_keeping_the_query_text() {
        let text = "-- comment; with semicolon\nCREATE MATERIALIZED VIEW analytics.mv_x AS\nSELECT a, 'x;y' AS s, COUNT(*) FROM t GROUP BY a;\nCREATE UNIQUE INDEX i ON analytics.mv_x(a);\n";
        let v = parse_view_file(Path::new("x.sql"), text).expect("parses");
        assert_eq!(v.name, QualifiedName::new("analytics", "mv_x"));
        assert_eq!(
            v.query_sql,
            "SELECT a, 'x;y' AS s, COUNT(*) FROM t GROUP BY a"
        );
        assert_eq!(
            v.index_sql,
            vec!["CREATE UNIQUE INDEX i ON analytics.mv_x(a)".to_string()]
        );
    }

    #[test]
    fn refuses_other_statements_and_foreign_indexes() {
        let e = parse_view_file(Path::new("y.sql"), "DROP TABLE x;").expect_err("refused");
        assert!(e.to_string().contains("y.sql"), "{e}");
        let e = parse_view_file(
            Path::new("z.sql"),
            "CREATE MATERIALIZED VIEW a.v AS SELECT count(*) FROM t; CREATE INDEX i ON a.other(x);",
        )
        .expect_err("refused");
        assert!(e.to_string().contains("index on a.other"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_view() {
        let e = parse_view_file(
            Path::new("s.sql"),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS Reports.Broken AS SELECT COUNT(* FROM t;",
        )
        .expect_err("refused");
        assert_eq!(e.view, "reports.broken", "{e}");
        assert!(e.to_string().contains("syntax error"), "{e}");
    }
}
