//! What the command line prints: aligned tables for people, JSON for programs, and errors that say
//! what to do. Everything goes through [`Output`], so a reader that stops early (`| head`) ends the
//! run quietly instead of a panic from `println!`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::io::{ErrorKind, Write};

/// Why a run stops early.
#[derive(Debug)]
pub enum Failure {
    /// Something a person can fix: what went wrong and what to do.
    Refused(String),
    /// Whoever read standard output stopped reading; nothing is left to tell them.
    OutputClosed,
}

impl Failure {
    pub fn refused(message: impl Into<String>) -> Self {
        Failure::Refused(message.into())
    }
}

/// Errors whose text already says what to do (the domain's and the core's), taken as they are. A
/// store error is not among them: it goes through [`crate::store::AtStore`], which names the store.
macro_rules! refusal_from {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Failure {
            fn from(e: $error) -> Self {
                Failure::Refused(e.to_string())
            }
        })*
    };
}

refusal_from!(
    broker_core::domain::InvalidValue,
    broker_core::ids::InvalidId,
    broker_core::providers::CatalogueError,
    broker_core::context::ContextError,
);

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == ErrorKind::BrokenPipe {
            Failure::OutputClosed
        } else {
            Failure::Refused(e.to_string())
        }
    }
}

/// Standard output, written line by line so a long listing reaches a pager as it goes.
pub struct Output<W: Write = std::io::Stdout> {
    out: W,
}

impl Output {
    pub fn stdout() -> Self {
        Output {
            out: std::io::stdout(),
        }
    }
}

impl<W: Write> Output<W> {
    #[cfg(test)]
    fn to(out: W) -> Self {
        Output { out }
    }

    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<(), Failure> {
        writeln!(self.out, "{text}")?;
        Ok(())
    }

    /// `label` then `value`, labels padded to one column, as in `connection show`.
    pub fn field(&mut self, label: &str, value: impl std::fmt::Display) -> Result<(), Failure> {
        self.line(format!("{label:<LABEL_WIDTH$}{value}"))
    }

    pub fn table(&mut self, table: &Table) -> Result<(), Failure> {
        for line in table.render() {
            self.line(line)?;
        }
        Ok(())
    }

    /// Pretty JSON: stable field names (serde), for scripts and `jq`.
    pub fn json(&mut self, value: &impl Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::refused(format!("cannot write JSON: {e}")))?;
        self.line(text)
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.out.flush()?;
        Ok(())
    }
}

/// The width of the label column of `connection show` and `tenant show`.
const LABEL_WIDTH: usize = 16;

/// Rows under a header, each column as wide as its widest cell, two spaces apart. The last column is
/// not padded, so no line ends in spaces.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn render(&self) -> Vec<String> {
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        std::iter::once(&header)
            .chain(&self.rows)
            .map(|row| {
                let last = row.len() - 1;
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i == last {
                        line.push_str(cell);
                    } else {
                        let pad = widths[i] - cell.chars().count();
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad + 2));
                    }
                }
                line.trim_end().to_string()
            })
            .collect()
    }
}

/// A time for people: UTC to the second (`2026-03-02T09:00:00Z`).
pub fn when(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// [`when`], or `-` for a time not (yet) known.
pub fn when_or_dash(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_string(), when)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_table_aligns_its_columns_under_a_header_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "NAME", "NOTE"]);
        table.row(vec!["a".into(), "Twinfield".into(), "".into()]);
        table.row(vec!["longer-id".into(), "X".into(), "last".into()]);
        let mut out = Output::to(Vec::new());
        out.table(&table).unwrap();
        assert_eq!(
            String::from_utf8(out.out).unwrap(),
            "ID         NAME       NOTE\n\
             a          Twinfield\n\
             longer-id  X          last\n"
        );
    }

    #[test]
    fn a_closed_reader_ends_the_output_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut out = Output::to(Closed);
        assert!(matches!(out.line("x"), Err(Failure::OutputClosed)));
    }

    #[test]
    fn times_are_shown_to_the_second() {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(when(at), "2026-03-02T09:00:00Z");
        assert_eq!(when_or_dash(None), "-");
    }
}
