//! One write statement with its arguments, run either on the SQLite writer (rusqlite, in the
//! calling thread) or on a PostgreSQL transaction (sqlx). The SQL is written once, with `$1`,
//! `$2`, ... placeholders, which both databases read (SQLite binds them by name here, so their
//! order in the text does not matter and one may appear twice).

use std::borrow::Cow;

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments};

/// A statement's argument. A NULL is a text NULL (PostgreSQL types it; no BIGINT column is
/// written NULL).
#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    NullText,
}

#[derive(Debug, Clone)]
pub(super) struct Stmt<'a> {
    pub sql: Cow<'a, str>,
    pub args: Vec<Arg<'a>>,
}

/// Names of the placeholders, `$1` to `$N`, as SQLite sees them.
fn placeholder(i: usize) -> Cow<'static, str> {
    const FIRST: [&str; 16] = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14",
        "$15", "$16",
    ];
    match FIRST.get(i) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("${}", i + 1)),
    }
}

impl<'a> Stmt<'a> {
    pub fn new(sql: impl Into<Cow<'a, str>>) -> Self {
        Stmt {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub fn text(mut self, v: impl Into<Cow<'a, str>>) -> Self {
        self.args.push(Arg::Text(v.into()));
        self
    }

    pub fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(v));
        self
    }

    pub fn opt_text(mut self, v: Option<&'a str>) -> Self {
        self.args
            .push(v.map_or(Arg::NullText, |s| Arg::Text(Cow::Borrowed(s))));
        self
    }

    /// Run on a SQLite connection; the number of rows changed. The prepared statement is kept
    /// in the connection's cache, so the SQL is parsed once per connection.
    pub fn run_sqlite(&self, conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
        let mut st = conn.prepare_cached(&self.sql)?;
        self.bind(&mut st)?;
        st.raw_execute()
    }

    /// Run a query on a SQLite connection: the first column of its first row, as text (`None`
    /// when there is no row or the value is NULL).
    pub fn text_sqlite(&self, conn: &rusqlite::Connection) -> rusqlite::Result<Option<String>> {
        let mut st = conn.prepare_cached(&self.sql)?;
        self.bind(&mut st)?;
        let mut rows = st.raw_query();
        match rows.next()? {
            Some(row) => row.get(0),
            None => Ok(None),
        }
    }

    fn bind(&self, st: &mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<()> {
        if st.parameter_count() != self.args.len() {
            return Err(rusqlite::Error::InvalidParameterCount(
                self.args.len(),
                st.parameter_count(),
            ));
        }
        for (i, arg) in self.args.iter().enumerate() {
            let name = placeholder(i);
            let at = st
                .parameter_index(&name)?
                .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.into_owned()))?;
            match arg {
                Arg::Text(s) => st.raw_bind_parameter(at, s.as_ref())?,
                Arg::Int(v) => st.raw_bind_parameter(at, v)?,
                Arg::NullText => st.raw_bind_parameter(at, rusqlite::types::Null)?,
            }
        }
        Ok(())
    }

    /// The statement as an sqlx query (PostgreSQL).
    pub fn to_sqlx(&self) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut args = AnyArguments::default();
        for arg in &self.args {
            // Adding an argument of these types cannot fail.
            let _ = match arg {
                Arg::Text(s) => args.add(s.as_ref()),
                Arg::Int(v) => args.add(*v),
                Arg::NullText => args.add(None::<String>),
            };
        }
        sqlx::query_with(&self.sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_bind_by_name_whatever_their_order_and_repeats() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b INTEGER, c TEXT, d INTEGER)")
            .unwrap();
        let n = Stmt::new("INSERT INTO t (d, a, b, c) VALUES ($2, $1, $2, $3)")
            .text("x")
            .int(7)
            .opt_text(None)
            .run_sqlite(&conn)
            .unwrap();
        assert_eq!(n, 1);
        let row: (String, i64, Option<String>, i64) = conn
            .query_row("SELECT a, b, c, d FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, ("x".to_owned(), 7, None, 7));
        // Too few or too many arguments is an error, not a silent NULL.
        assert!(Stmt::new("INSERT INTO t (a) VALUES ($1)")
            .run_sqlite(&conn)
            .is_err());
        assert!(Stmt::new("INSERT INTO t (a) VALUES ($1)")
            .text("x")
            .int(1)
            .run_sqlite(&conn)
            .is_err());
    }

    #[test]
    fn a_text_query_answers_the_first_column_of_the_first_row_or_none() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k TEXT, v TEXT); INSERT INTO t VALUES ('a', 'one'), ('b', NULL)",
        )
        .unwrap();
        let get = |k: &str| {
            Stmt::new("SELECT v FROM t WHERE k = $1")
                .text(k.to_owned())
                .text_sqlite(&conn)
                .unwrap()
        };
        assert_eq!(get("a").as_deref(), Some("one"));
        assert_eq!(get("b"), None);
        assert_eq!(get("c"), None);
    }
}
