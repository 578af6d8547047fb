//! Reading PostgreSQL's SQLSTATE from a sqlx error. Each module that acts on a code says there
//! what that code means for it (a busy branch, a lost one, a transient no vote).

/// True when `error` is PostgreSQL's SQLSTATE `code`.
pub fn has_code(error: &sqlx::Error, code: &str) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|c| c == code)
}
