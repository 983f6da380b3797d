//! The parameters of a batch's statements: one text array per target column (`unnest`ed by
//! the statements of [`super::target`]).
//!
//! A batch of a catch-up writes about 38k target rows of 7-9 values. As `Vec<Option<String>>`
//! each value was a `String` of its own, allocated and freed on the thread that also reads the
//! replication stream; here a column's texts lie end to end in one buffer. The array goes over
//! the wire exactly as the `Vec` did (binary array format, text elements).

use std::ops::Range;

use bytes::BytesMut;
use postgres_protocol::types::{array_to_sql, ArrayDimension};
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};

use crate::value::Value;

/// A text array parameter: its elements' texts in one buffer, and where each lies (`None`:
/// NULL).
#[derive(Debug, Default, Clone)]
pub struct TextColumn {
    text: String,
    elements: Vec<Option<Range<u32>>>,
}

impl TextColumn {
    pub fn with_capacity(elements: usize) -> Self {
        TextColumn {
            text: String::new(),
            elements: Vec::with_capacity(elements),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Appends `v`'s text ([`Value::to_text`]).
    pub fn push(&mut self, v: &Value) {
        let start = self.text.len();
        let element = v
            .write_text(&mut self.text)
            .then(|| offset(start)..offset(self.text.len()));
        self.elements.push(element);
    }

    #[cfg(test)]
    fn texts(&self) -> Vec<Option<&str>> {
        (self.elements.iter())
            .map(|e| {
                e.clone()
                    .map(|r| &self.text[r.start as usize..r.end as usize])
            })
            .collect()
    }
}

/// An offset into a column's text. A batch's column stays far below 4 GiB: PostgreSQL refuses
/// a parameter of 1 GB or more.
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// Appends each value's text to its column's array.
pub fn push_texts<'a>(cols: &mut [TextColumn], values: impl IntoIterator<Item = &'a Value>) {
    for (v, col) in values.into_iter().zip(cols) {
        col.push(v);
    }
}

impl ToSql for TextColumn {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Kind::Array(member) = ty.kind() else {
            return Err(format!("a text array parameter sent as {ty}").into());
        };
        let dimension = ArrayDimension {
            len: i32::try_from(self.elements.len())?,
            lower_bound: 1,
        };
        let text = self.text.as_bytes();
        array_to_sql(
            Some(dimension),
            member.oid(),
            self.elements.iter(),
            |element, buf| match element {
                Some(r) => {
                    let bytes = text.get(r.start as usize..r.end as usize).ok_or(
                        "a text array element past its column's text (over 4 GiB of text?)",
                    )?;
                    buf.extend_from_slice(bytes);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            out,
        )?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(member) if <String as ToSql>::accepts(member))
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The array goes over the wire byte for byte as a `Vec<Option<String>>` of the values'
    /// texts did, NULLs and empty strings included.
    #[test]
    fn a_column_is_sent_as_the_vec_of_its_texts(
    ) -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
        let values = [
            Value::Int(-42),
            Value::Null,
            Value::Text(String::new()),
            Value::Text("a \"quoted\", {braced} value".into()),
            Value::Float(0.1),
            Value::Bool(true),
        ];
        let mut col = TextColumn::with_capacity(values.len());
        push_texts(std::slice::from_mut(&mut col), [&values[0]]);
        for v in &values[1..] {
            col.push(v);
        }
        let texts: Vec<Option<String>> = values.iter().map(Value::to_text).collect();
        let as_strs: Vec<Option<&str>> = texts.iter().map(Option::as_deref).collect();
        assert_eq!(col.texts(), as_strs);
        for ty in [Type::TEXT_ARRAY, Type::VARCHAR_ARRAY] {
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            col.to_sql_checked(&ty, &mut ours)?;
            texts.to_sql_checked(&ty, &mut theirs)?;
            assert_eq!(ours, theirs);
        }
        let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
        TextColumn::default().to_sql_checked(&Type::TEXT_ARRAY, &mut ours)?;
        Vec::<Option<String>>::new().to_sql_checked(&Type::TEXT_ARRAY, &mut theirs)?;
        assert_eq!(ours, theirs);
        Ok(())
    }
}
