//! A durable, transactional job queue on SQLite and PostgreSQL through sqlx `Any`.
//!
//! Its content is built under issue #3; the crate is a workspace member from the start so the
//! repository has the layout DESIGN.md fixes.
